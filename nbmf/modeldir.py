"""The model directory: the one module that knows how encoder versions are named and stored.

    models/
      CURRENT      text: the version new records are encoded with ("v1"); absent: the stub
      v1/          a model artifact (manifest.json + hashed files, nbmf/artifact.py)
      v2/
      .lock        taken while a version is allocated and registered

Version names: encoder id 0 is ``stub``, id N >= 1 is ``vN`` spelled in ASCII digits without leading
zeros, so ``version_name(version_id(name)) == name`` for every accepted name (``v01`` and ``V1`` are
refused, as names and as directories). Registered versions are never replaced: blobs written by
them must stay decodable forever.

>>> version_id("v12"), version_name(12), version_name(0)
(12, 'v12', 'stub')
>>> version_id("v01")
Traceback (most recent call last):
...
ValueError: encoder versions are 'stub' or 'v1', 'v2', ... (no leading zeros); got 'v01'
"""
from __future__ import annotations

import os
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

from nbmf.errors import NBMFError, UnknownVersionError

STUB = "stub"
STUB_ID = 0
CURRENT = "CURRENT"
MANIFEST = "manifest.json"  # what makes a vN/ directory a version (the artifact format is nbmf/artifact.py)
ENV = "NBMF_MODEL_DIR"
SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the repository, when nbmf runs from a source checkout
PACKAGED = Path(__file__).resolve().parent / "released"  # the released models shipped in the wheel
_NEURAL = re.compile(r"v([1-9][0-9]*)", re.ASCII)


class ModelDirError(NBMFError):
    """The model directory cannot take this version (it exists already, or the artifact names another)."""


class NoModelWarning(UserWarning):
    """The library encodes with the stub because it found no model to encode with."""


# -- names ------------------------------------------------------------------------------------------
def version_name(encoder_id: int) -> str:
    """0 -> 'stub', N -> 'vN'."""
    return STUB if encoder_id == STUB_ID else f"v{encoder_id}"


def version_id(name: str) -> int:
    """'stub' -> 0, 'vN' -> N; anything else is a ValueError."""
    if name == STUB:
        return STUB_ID
    return neural_id(name, _what="encoder versions are 'stub' or 'v1', 'v2', ...")


def neural_id(name: str, _what: str = "neural encoder versions are named v1, v2, ...") -> int:
    """'vN' -> N (N >= 1); 'stub' and malformed names are ValueErrors."""
    m = _NEURAL.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        raise ValueError(f"{_what} (no leading zeros); got {name!r}")
    return int(m.group(1))


def is_version_name(name: str) -> bool:
    try:
        version_id(name)
    except ValueError:
        return False
    return True


# -- reading ----------------------------------------------------------------------------------------
def default_model_dir() -> Path:
    """Where the default registry finds its models, first match wins:

    1. ``$NBMF_MODEL_DIR`` when set;
    2. ``models/`` of the source checkout nbmf runs from (a directory with pyproject.toml above nbmf/);
    3. ``nbmf/released``: the released models the wheel ships as package data.

    With none of them present this is the packaged path, which does not exist; ``Registry.default``
    then warns once (``NoModelWarning``) and encodes with the stub.
    """
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    checkout = SOURCE_ROOT / "models"
    if (SOURCE_ROOT / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    return PACKAGED


_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """A NoModelWarning, at most once per process for each ``key``."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, NoModelWarning, stacklevel=3)


def warn_if_no_model(model_dir: Path) -> None:
    """Say once, and where to put one, when the default model directory gives encode no model."""
    if model_dir.is_dir() and (model_dir / CURRENT).is_file():
        return
    why = "does not exist" if not model_dir.is_dir() else f"has no {CURRENT} file"
    warn_once(f"no-model:{model_dir}", f"nbmf: the model directory {model_dir} {why}, so encode writes stub (zlib) "
              "blobs and blobs of neural versions cannot be decoded. Set NBMF_MODEL_DIR to a model directory "
              "(vN/ artifact dirs + a CURRENT file naming one, like the repository's models/), or write "
              "'stub' into its CURRENT to encode with the stub on purpose.")


def version_dirs(model_dir) -> dict[int, Path]:
    """Encoder id -> ``vN/`` directory, for every ``vN/`` that holds a manifest, by id."""
    d = Path(model_dir) if model_dir is not None else None
    if d is None or not d.is_dir():
        return {}
    found = {}
    for p in d.iterdir():
        m = _NEURAL.fullmatch(p.name)
        if m and p.is_dir() and (p / MANIFEST).is_file():
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def versions(model_dir) -> list[str]:
    """Neural versions the directory holds (``vN/`` with a manifest), oldest first."""
    return [version_name(i) for i in version_dirs(model_dir)]


def current(model_dir) -> str | None:
    """The version ``CURRENT`` names ('stub' or a held 'vN'); None when there is no (or an empty) CURRENT.

    A CURRENT that names anything else is a broken model directory: UnknownVersionError, never a guess.
    """
    if model_dir is None:
        return None
    f = Path(model_dir) / CURRENT
    try:
        name = f.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not name:
        return None
    if not is_version_name(name):
        raise UnknownVersionError(f"{f} names {name!r}, which is not a version name (stub, v1, v2, ...); "
                                  "write the current version's name there")
    if name != STUB and name not in versions(model_dir):
        held = ", ".join(versions(model_dir)) or "no neural version"
        raise UnknownVersionError(f"{f} names {name}, which {model_dir} does not hold (it holds {held}); "
                                  f"restore {name}/ or point CURRENT at a held version")
    return name


# -- writing ----------------------------------------------------------------------------------------
@contextmanager
def locked(model_dir):
    """Exclusive lock on the directory for a version allocation + registration (POSIX ``flock``)."""
    import fcntl

    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield d
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def next_version(model_dir) -> str:
    """One past the highest version directory (a half-written ``.vN.tmp`` counts too, so it is never reused)."""
    d = Path(model_dir)
    taken = [int(m.group(1)) for p in (d.iterdir() if d.is_dir() else [])
             if (m := _NEURAL.fullmatch(p.name.lstrip(".").removesuffix(".tmp")))]
    return version_name(max(taken, default=0) + 1)


def set_current(model_dir, version: str) -> None:
    """Point CURRENT at a held version (or 'stub'), atomically (write a temporary file, rename it)."""
    d = Path(model_dir)
    if version != STUB and version not in versions(d):
        raise UnknownVersionError(f"{d} does not hold {version!r} (it holds {', '.join(versions(d)) or 'none'})")
    tmp = d / f".{CURRENT}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(version + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, d / CURRENT)


def register(artifact_dir, model_dir, version: str, make_current: bool = True) -> Path:
    """Copy a verified artifact into ``model_dir/version``; point CURRENT at it. Call under ``locked``.

    The copy goes to ``.vN.tmp`` and is renamed into place, so a reader sees no version or a whole one;
    an existing version is never replaced. Only the manifest and the files it lists are copied (never a link's
    target or a stray file).
    """
    from nbmf.artifact import copy_verified, read_manifest

    neural_id(version)
    manifest = read_manifest(artifact_dir)  # verifies every file's sha256
    if manifest.get("version") != version:
        raise ModelDirError(f"artifact {artifact_dir} was exported as {manifest.get('version')!r}, not {version!r}: "
                            "re-export it with the version it is registered under")
    d = Path(model_dir)
    dest = d / version
    if dest.exists():
        raise ModelDirError(f"{dest} already exists: registered versions are never replaced")
    tmp = d / f".{version}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    copy_verified(artifact_dir, tmp)
    os.rename(tmp, dest)  # fails (never overwrites) if dest appeared meanwhile
    if make_current:
        set_current(d, version)
    return dest
