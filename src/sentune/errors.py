"""User-facing errors: one line that names the problem and the fix.

The CLI turns any `SentuneError` into that line on stderr and exit code 2.
"""


class SentuneError(Exception):
    """A mistake the user can fix; the message says how."""


class SpaceError(SentuneError):
    """A search-space file (or an override of one) is invalid."""


class DataError(SentuneError):
    """A dataset cannot be found, read or used."""


class ModelError(SentuneError):
    """A model cannot be found or loaded."""


class ResourceError(SentuneError):
    """Requested resources (GPUs, CPUs, cluster) are not available."""


class RunError(SentuneError):
    """A run folder is missing, empty or not a sentune run."""


class ExportError(SentuneError):
    """An export cannot be written, fails its parity check, or a folder is not an export."""


class StorageError(SentuneError):
    """Object storage (`--storage s3://…`) is malformed, unreachable or refuses access."""


class SearchFailedError(SentuneError):
    """Every trial of a search failed: there is nothing to rank, confirm or export."""
