"""Peak memory of a benchmark's measurements: this process's peak resident memory, and a call
run in a fresh process so that the peak it reports is its own.

The peer's search (`peer`) and the throughput measurements (`throughput`) both record it.
"""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_isolated(fn, *args, **kwargs):
    """Call `fn` in a fresh process, so that its peak memory is its own.

    Args:
        fn: A picklable function (module level).
        *args: Its arguments (pickled to the process).
        **kwargs: Its keyword arguments.

    Returns:
        What `fn` returns.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()
