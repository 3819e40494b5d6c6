"""Where runs are kept: a local folder, or object storage by URI (`s3://bucket/prefix`,
`gs://…`, any pyarrow filesystem URI), mirrored in the cache.

A run in object storage has the layout of a local one (`runs.layout`). Ray Tune writes its trials
(params, results, checkpoints) to the URI from whichever node runs them; sentune's driver
writes its own files (manifest, Optuna journal: `runs.driver_files`) in a local
mirror of the run (`<cache>/storage/<scheme>/<bucket>/<prefix>/<run>`) and `push`es them as
they change. Readers (leaderboard, report, export, dashboard, `--resume`) `pull` the run into
the mirror first and read it there as a local folder; a pull fetches each trial's best
checkpoint whole and only the metrics of the others.

Credentials come from the environment only (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_ENDPOINT_URL_S3`, …, as pyarrow reads them); a URI that holds any is refused.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qsl, urlsplit

from sentune import config, runs
from sentune.errors import RunError, StorageError

log = logging.getLogger(__name__)

#: Query parameters of a filesystem URI that carry secrets (pyarrow's S3/GCS options).
_SECRET_PARAMS = ("access_key", "secret_key", "session_token", "access_token", "password")
_ENV_HINT = (
    "put credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, and "
    "AWS_ENDPOINT_URL_S3 for an S3-compatible server)"
)


@dataclass(frozen=True)
class Storage:
    """The runs folder of a command: local, or object storage mirrored locally.

    Attributes:
        location: What the user gave (`--storage`): a folder or a URI.
        root: The local folder of runs: `location` itself, or the mirror of the URI.
        uri: The URI of the runs (no trailing slash); None for a local folder.
    """

    location: str
    root: Path
    uri: str | None = None

    @property
    def remote(self) -> bool:
        """Whether the runs live in object storage."""
        return self.uri is not None

    def run_dir(self, name: str) -> Path:
        """The local folder of run `name` (in the mirror for object storage)."""
        return self.root / name

    def tune_path(self, name: str | None = None) -> str:
        """Where Ray Tune keeps the runs (or run `name`): the URI, else the absolute folder."""
        base = self.uri or str(self.root.resolve())
        return f"{base}/{name}" if name else base


def open_storage(location: str | Path, *, cache_dir: str | Path = config.CACHE_DIR) -> Storage:
    """The `Storage` that `--storage` names.

    Args:
        location: A folder, or a URI that pyarrow knows (`s3://bucket/prefix`, `gs://…`).
        cache_dir: The cache under which object storage is mirrored.

    Raises:
        StorageError: The URI holds credentials, or names no bucket.
    """
    text = str(location)
    if "://" not in text:
        return Storage(text, Path(text))
    parts = urlsplit(text)
    if parts.scheme == "file":
        return Storage(text, Path(parts.path))
    secrets = [k for k, _ in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMS]
    if parts.username or parts.password or secrets:
        raise StorageError(f"--storage: the URI holds credentials; drop them and {_ENV_HINT}")
    if not parts.netloc:
        raise StorageError(f"--storage {text}: name a bucket, e.g. s3://my-bucket/sentune")
    uri = text.rstrip("/")
    prefix = PurePosixPath(parts.path.strip("/"))
    if ".." in prefix.parts:
        raise StorageError(f"--storage {text}: '..' is not allowed in the prefix")
    root = Path(cache_dir) / config.MIRROR_DIR / parts.scheme / parts.netloc / prefix
    return Storage(text, root, uri)


@functools.lru_cache(maxsize=8)
def _filesystem(uri: str):
    """pyarrow's filesystem for `uri` and the path of `uri` in it (credentials from the
    environment)."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as err:
        raise StorageError(
            f"--storage {uri}: {_one_line(err)}; use an s3://, gs:// or other pyarrow "
            "filesystem URI"
        ) from None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] or type(err).__name__


def check_writable(store: Storage) -> None:
    """Fail early (before data preparation) on storage that cannot be written: a local folder
    (or the mirror of object storage) that is a file or not writable; object storage that
    cannot be reached: no such bucket, no credentials, no server at the endpoint.

    Raises:
        RunError: The local folder cannot be written.
        StorageError: The bucket cannot be listed.
    """
    _check_folder_writable(store.root)
    if not store.remote:
        return
    import pyarrow.fs as pafs

    fs, path = _filesystem(store.uri)
    bucket = path.split("/", 1)[0]
    try:
        info = fs.get_file_info(bucket)
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"--storage {store.uri}: no bucket {bucket!r}; create it first")
        fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    except OSError as err:
        raise StorageError(
            f"--storage {store.uri}: cannot reach it ({_one_line(err)}); {_ENV_HINT}"
        ) from None


def _check_folder_writable(folder: Path) -> None:
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunError(
            f"--storage {folder}: {existing} is a file, not a folder; choose another --storage"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(
            f"--storage {folder}: {existing} is not writable; choose a writable --storage"
        )


def _remote_path(store: Storage, name: str, relative: str | Path = "") -> str:
    _, path = _filesystem(store.uri)
    return str(PurePosixPath(path, name, PurePosixPath(relative)))


def run_exists(store: Storage, name: str) -> bool:
    """Whether run `name` exists (in the mirror or, for object storage, remotely)."""
    if store.run_dir(name).exists():
        return True
    if not store.remote:
        return False
    import pyarrow.fs as pafs

    fs, _ = _filesystem(store.uri)
    return fs.get_file_info(_remote_path(store, name)).type != pafs.FileType.NotFound


def push(store: Storage, name: str, paths: list[Path] | None = None) -> None:
    """Upload files of run `name` from the mirror (default: `runs.driver_files`, the driver's
    own records) as they change. A no-op for a local folder."""
    if not store.remote:
        return
    fs, _ = _filesystem(store.uri)
    run_dir = store.run_dir(name)
    for path in runs.driver_files(run_dir) if paths is None else paths:
        relative = Path(path).relative_to(run_dir).as_posix()
        with fs.open_output_stream(_remote_path(store, name, relative)) as out:
            out.write(Path(path).read_bytes())


def delete(store: Storage, name: str, paths: list[Path]) -> None:
    """Delete files or folders (in the mirror, by their local paths) of run `name` from object
    storage too. A no-op for a local folder."""
    if not store.remote:
        return
    import pyarrow.fs as pafs

    fs, _ = _filesystem(store.uri)
    run_dir = store.run_dir(name)
    for path in paths:
        target = _remote_path(store, name, Path(path).relative_to(run_dir).as_posix())
        kind = fs.get_file_info(target).type
        if kind == pafs.FileType.Directory:
            fs.delete_dir(target)
        elif kind == pafs.FileType.File:
            fs.delete_file(target)


def remove_run(store: Storage, name: str) -> None:
    """Remove run `name` whole: its local folder (or mirror) and its remote copy."""
    shutil.rmtree(store.run_dir(name), ignore_errors=True)
    if store.remote:
        import pyarrow.fs as pafs

        fs, _ = _filesystem(store.uri)
        target = _remote_path(store, name)
        if fs.get_file_info(target).type == pafs.FileType.Directory:
            fs.delete_dir(target)


def pull(store: Storage, name: str, *, bodies: bool = True) -> Path:
    """Bring run `name` into the mirror and return its local folder (the folder itself for
    local storage).

    Files that changed remotely are fetched, with their remote modification time; files gone
    remotely (checkpoints a finished trial dropped) are removed from the mirror. Checkpoint
    bodies (`runs.is_checkpoint_body`) are fetched for each trial's best checkpoint only, and
    none with `bodies=False`; training states never (Ray Tune resumes from the URI itself).

    Raises:
        RunError: No run `name` in object storage.
    """
    run_dir = store.run_dir(name)
    if not store.remote:
        return run_dir
    import pyarrow.fs as pafs

    fs, _ = _filesystem(store.uri)
    base = _remote_path(store, name)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except FileNotFoundError:
        raise RunError(
            f"no run {name!r} in {store.uri}; list the runs with your object store's tools"
        ) from None
    except OSError as err:
        raise StorageError(f"--storage {store.uri}: cannot list it ({_one_line(err)})") from None
    remote = {
        PurePosixPath(i.path).relative_to(base).as_posix(): i
        for i in infos
        if i.type == pafs.FileType.File
    }
    metadata = {rel: i for rel, i in remote.items() if not runs.is_checkpoint_body(rel)}
    _fetch(fs, metadata, run_dir)
    best = {_best(run_dir / rel) for rel in metadata if rel.endswith(runs.STATE_FILE)}
    kept = {
        rel
        for rel in remote
        if not runs.is_checkpoint_body(rel)
        or (Path(rel).name != runs.TRAINING_STATE_FILE and (run_dir / rel).parent in best)
    }
    if bodies:
        _fetch(fs, {rel: remote[rel] for rel in kept if rel not in metadata}, run_dir)
    _drop_stale(run_dir, kept)
    return run_dir


def _best(state_file: Path) -> Path | None:
    """The best checkpoint of the trial that `state_file` (a checkpoint's metrics) is in."""
    return runs.best_checkpoint(state_file.parent.parent)


def _fetch(fs, files: dict, run_dir: Path) -> None:
    for relative, info in files.items():
        local = run_dir / relative
        if local.is_file():
            stat = local.stat()
            if stat.st_size == info.size and int(stat.st_mtime) == int(info.mtime.timestamp()):
                continue
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + ".part")
        with fs.open_input_stream(info.path) as src, tmp.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        mtime = info.mtime.timestamp()
        os.utime(tmp, (mtime, mtime))  # `runs.latest_run` orders runs by manifest time
        tmp.replace(local)


def _drop_stale(run_dir: Path, kept: set[str]) -> None:
    """Remove mirrored files that are gone remotely, and bodies of checkpoints no longer best."""
    for path in sorted(run_dir.rglob("*"), reverse=True):
        if path.is_file() and path.relative_to(run_dir).as_posix() not in kept:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def run_names(store: Storage) -> list[str]:
    """The names of the runs in object storage (folders holding a manifest)."""
    import pyarrow.fs as pafs

    fs, path = _filesystem(store.uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as err:
        raise StorageError(f"--storage {store.uri}: cannot list it ({_one_line(err)})") from None
    folders = [PurePosixPath(i.path).name for i in infos if i.type == pafs.FileType.Directory]
    manifests = fs.get_file_info([f"{path}/{n}/{runs.MANIFEST}" for n in folders])
    return sorted(
        n for n, i in zip(folders, manifests, strict=True) if i.type == pafs.FileType.File
    )


def resolve_run(run: str | Path | None, store: Storage, *, finished: bool = True) -> Path:
    """The local folder of the run a command names (`runs.resolve_run`), pulled first when the
    runs live in object storage.

    Args:
        run: A run name, a local run folder, or None for the latest (finished) run.
        store: The runs folder (`--storage`).
        finished: With `run` None, only consider finished runs.

    Returns:
        The run's local folder.
    """
    if not store.remote:
        if run is None:
            return runs.latest_run(store.root, finished=finished)
        return runs.resolve_run(run, store.root)[0]
    if run is not None:  # a run name, or its folder in the mirror: refreshed either way
        return pull(store, Path(run).name)
    names = run_names(store)
    for name in names:
        pull(store, name, bodies=False)
    stale = [p.name for p in store.root.glob("*/") if runs.is_run(p) and p.name not in names]
    for name in stale:
        shutil.rmtree(store.root / name, ignore_errors=True)
    latest = runs.latest_run(store.root, finished=finished)
    return pull(store, latest.name)
