"""Where data, runs and models live: local paths or URIs, and what a submitted Ray job may use.

Every location a job reads or writes (``data.source``, ``run.storage_path``, ``wandb.dir``, Tune's
``search.storage_path`` and ``registry.dir``) is a local path or a URI: ``s3://bucket/prefix``,
``gs://bucket/prefix``, ``file:///abs/path``, or any other scheme pyarrow knows (Ray Train's own storage
layer resolves ``storage_path`` the same way), else any scheme an installed fsspec filesystem knows.

Inside ``ray job submit --working-dir .`` the job runs in a temporary copy of the working directory on
the head node. A relative path there names that copy: outputs written there vanish with it, and inputs
outside the uploaded tree (``../shared/corpus``) do not exist. ``path_problems`` turns such paths into
``ConfigError`` lines that say what to pass instead.

>>> join("s3://bucket/runs/", "search", "trial_1")
's3://bucket/runs/search/trial_1'
>>> resolve("file:///data/corpus")
'/data/corpus'
>>> is_uri("gs://b/x"), is_uri("/abs/x"), is_uri("file:///abs/x")
(True, False, False)
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

# Set by Ray's job supervisor in the environment of a submitted job's entrypoint (and inherited by its
# subprocesses): the job's runtime_env, working_dir included. Not set for `python -m train` on a node.
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def is_uri(path: str | os.PathLike) -> bool:
    """A remote location (scheme://...); ``file://`` URIs are local paths."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def resolve(path: str | os.PathLike) -> str:
    """A URI unchanged (``file://`` ones become the local path), a local path made absolute."""
    text = str(path)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if is_uri(text):
        return text
    return str(Path(text).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base).joinpath(*parts))


def submitted_job() -> dict | None:
    """The runtime_env of the submitted Ray job this process belongs to, or None outside one."""
    raw = os.environ.get(JOB_ENV)
    if not raw:
        return None
    try:
        return json.loads(raw).get("runtime_env") or {}
    except (json.JSONDecodeError, AttributeError):
        return {}


def path_problems(outputs: Mapping[str, str] = (), inputs: Mapping[str, str] = ()) -> list[str]:
    """``ConfigError`` lines for relative local paths inside a submitted job (none outside one).

    ``outputs`` (storage, registry, W&B dirs): any relative path is a problem, it would write into the
    job's temporary copy of the working directory. ``inputs`` (data sources): a relative path is a problem
    unless it exists there, i.e. it was uploaded with ``--working-dir`` (``data/sample``).
    """
    if submitted_job() is None:
        return []
    outputs, inputs = dict(outputs or {}), dict(inputs or {})
    here = os.getcwd()
    problems = []
    for key, value in [*outputs.items(), *inputs.items()]:
        if not value or is_uri(value) or value.startswith("file://") or Path(value).expanduser().is_absolute():
            continue
        if key in inputs:
            if Path(value).exists():
                continue
            what = f"it resolves to {Path(value).resolve()} inside the job's uploaded working directory, where it " \
                   "does not exist"
        else:
            what = f"the job would write it inside its temporary working directory ({here}), lost when the job ends"
        problems.append(f"{key}: {value!r} is a relative path inside a submitted Ray job: {what}; pass an absolute "
                        f"path that every node sees (e.g. {key}=/mnt/shared/...) or a URI ({key}=s3://bucket/...)")
    return problems


def filesystem(uri: str):
    """``(pyarrow.fs.FileSystem, path inside it)`` for a local path or URI (pyarrow first, then fsspec)."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    text = resolve(uri)
    if not is_uri(text):
        return pafs.LocalFileSystem(), text
    try:
        return pafs.FileSystem.from_uri(text)
    except pa.ArrowInvalid:  # a scheme pyarrow does not know: try fsspec's registry (memory://, abfs://, ...)
        import fsspec

        fs, path = fsspec.core.url_to_fs(text)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def exists(uri: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def listing(uri: str) -> list[tuple[str, int]]:
    """Every file under a directory: ``(relative path, size)`` sorted; [] when there is none."""
    import pyarrow.fs as pafs

    fs, root = filesystem(uri)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    root = root.rstrip("/") + "/"
    return sorted((i.path[len(root):], i.size) for i in infos if i.type == pafs.FileType.File)


def copy_dir(src: str, dst: str) -> None:
    """Copy a directory tree between any two locations (local paths or URIs)."""
    import pyarrow.fs as pafs

    sfs, spath = filesystem(src)
    dfs, dpath = filesystem(dst)
    if sfs.get_file_info(spath).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{src} is not a directory")
    dfs.create_dir(dpath, recursive=True)
    pafs.copy_files(spath, dpath, source_filesystem=sfs, destination_filesystem=dfs)


def read_text(uri: str) -> str:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read().decode("utf-8")


def write_text(uri: str, text: str) -> None:
    fs, path = filesystem(uri)
    parent = path.rsplit("/", 1)[0]
    if parent and parent != path:
        fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode("utf-8"))


def cache_root() -> Path:
    """Local copies of remote inputs: $NBMF_CACHE_DIR/storage, else ~/.cache/nbmf/storage (nbmf.dictionary's)."""
    from nbmf.dictionary import default_cache_dir

    return default_cache_dir() / "storage"


def local_dir(location: str, cache: str | Path | None = None) -> Path:
    """A local directory holding ``location``'s files: itself when local, else a cached copy of the remote tree.

    The copy is keyed by the URI and refreshed when the remote listing (paths, sizes) changes, so a second
    run on the same data downloads nothing.
    """
    text = resolve(location)
    if not is_uri(text):
        return Path(text)
    files = listing(text)
    if not files:
        raise FileNotFoundError(f"{location}: no such directory, or it is empty")
    stamp = hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]
    dest = Path(cache or cache_root()) / hashlib.sha256(text.encode()).hexdigest()[:16]
    marker = dest / ".nbmf-listing"
    if not (marker.is_file() and marker.read_text() == stamp):
        import shutil

        if dest.exists():
            shutil.rmtree(dest)
        tmp = dest.with_name(dest.name + f".part-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        copy_dir(text, str(tmp))
        (tmp / ".nbmf-listing").write_text(stamp)
        tmp.rename(dest)
    return dest


def upload_new(local: str | Path, uri: str) -> None:
    """Copy a local directory to ``uri``, which must not exist yet (never overwrites)."""
    if exists(uri):
        raise FileExistsError(f"{uri} already exists: it is never overwritten")
    copy_dir(str(local), uri)
