"""The model directory: the one module that knows how encoder versions are named and stored.

    models/
      CURRENT      text: the version new records are encoded with ("v1"); absent: the stub
      DOMAINS.json {"legal": "v2", ...}: the version of each domain that has its own; absent: none has
      v1/          a model artifact (manifest.json + hashed files, nbmf/artifact.py)
      v2/
      .lock        taken while a version is allocated and registered, and while DOMAINS.json is rewritten

CURRENT is the default: a record of a domain that DOMAINS.json does not name is encoded with it, so a directory
without DOMAINS.json (every one written before per-domain versions) reads as before, with nothing to migrate.

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

import json
import os
import re
import shutil
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

from nbmf.errors import NBMFError, UnknownVersionError

STUB = "stub"
STUB_ID = 0
CURRENT = "CURRENT"
DOMAINS = "DOMAINS.json"
MAX_DOMAIN_LEN = 128  # characters; domains are tenant ids and names like "legal"
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


def _default(model_dir) -> str | None:
    """The version ``CURRENT`` names ('stub' or a held 'vN'); None when there is no (or an empty) CURRENT."""
    if model_dir is None:
        return None
    f = Path(model_dir) / CURRENT
    try:
        name = f.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not name:
        return None
    _check_held(model_dir, name, f"{f} names")
    return name


def _check_held(model_dir, name, where: str) -> None:
    if not is_version_name(name):
        raise UnknownVersionError(f"{where} {name!r}, which is not a version name (stub, v1, v2, ...); "
                                  "write a held version's name there")
    if name != STUB and name not in versions(model_dir):
        held = ", ".join(versions(model_dir)) or "no neural version"
        raise UnknownVersionError(f"{where} {name}, which {model_dir} does not hold (it holds {held}); "
                                  f"restore {name}/ or point it at a held version")


def check_domain(domain) -> str:
    """A domain name: a non-empty str of at most MAX_DOMAIN_LEN printable characters (a ValueError otherwise)."""
    if not isinstance(domain, str) or not domain or len(domain) > MAX_DOMAIN_LEN or not domain.isprintable():
        raise ValueError(f"a domain is a non-empty name of at most {MAX_DOMAIN_LEN} printable characters "
                         f"(e.g. 'legal' or a tenant id); got {domain!r}")
    return domain


def domain_versions(model_dir) -> dict[str, str]:
    """Domain -> its own version, from ``DOMAINS.json``; {} when the directory has none (every domain encodes
    with CURRENT). A file that is not a JSON object of domain -> held version is a broken model directory:
    ModelDirError or UnknownVersionError, never a guess."""
    if model_dir is None:
        return {}
    f = Path(model_dir) / DOMAINS
    try:
        text = f.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    try:
        mapping = json.loads(text)
    except ValueError as e:
        raise ModelDirError(f"{f} is not JSON ({e}); restore it, or delete it to encode every domain with "
                            f"{CURRENT}") from None
    if not isinstance(mapping, dict):
        raise ModelDirError(f"{f} holds a JSON {type(mapping).__name__}, not an object of domain -> version")
    for domain, name in mapping.items():
        try:
            check_domain(domain)
        except ValueError as e:
            raise ModelDirError(f"{f}: {e}") from None
        _check_held(model_dir, name, f"{f} maps domain {domain!r} to")
    return dict(sorted(mapping.items()))


def current(model_dir, domain: str | None = None) -> str | None:
    """The version records of ``domain`` are encoded with: its ``DOMAINS.json`` entry, else the version ``CURRENT``
    names ('stub' or a held 'vN'); None when neither applies (no, or an empty, CURRENT).

    A CURRENT or DOMAINS.json that names anything else is a broken model directory: UnknownVersionError, never
    a guess.
    """
    if domain is not None:
        own = domain_versions(model_dir).get(check_domain(domain))
        if own is not None:
            return own
    return _default(model_dir)


# -- writing ----------------------------------------------------------------------------------------
_holders: dict[Path, list] = {}  # directory -> [RLock, depth, open lock file]: ``locked`` nests in one thread
_holders_guard = threading.Lock()


@contextmanager
def locked(model_dir):
    """Exclusive lock on the directory for a version allocation + registration, or a rewrite of DOMAINS.json
    (POSIX ``flock`` across processes, a lock per directory across threads). It nests: code that holds it may
    call ``set_current``, which takes it too."""
    import fcntl

    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    with _holders_guard:
        holder = _holders.setdefault(d.resolve(), [threading.RLock(), 0, None])
    with holder[0]:
        if holder[1] == 0:
            fh = open(d / ".lock", "w")
            fcntl.flock(fh, fcntl.LOCK_EX)
            holder[2] = fh
        holder[1] += 1
        try:
            yield d
        finally:
            holder[1] -= 1
            if holder[1] == 0:
                fcntl.flock(holder[2], fcntl.LOCK_UN)
                holder[2].close()
                holder[2] = None


def next_version(model_dir) -> str:
    """One past the highest version directory (a half-written ``.vN.tmp`` counts too, so it is never reused)."""
    d = Path(model_dir)
    taken = [int(m.group(1)) for p in (d.iterdir() if d.is_dir() else [])
             if (m := _NEURAL.fullmatch(p.name.lstrip(".").removesuffix(".tmp")))]
    return version_name(max(taken, default=0) + 1)


def _write_atomic(path: Path, text: str) -> None:
    """Write a temporary file beside ``path``, fsync it, rename it over ``path``: a reader sees the old or the new."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def set_current(model_dir, version: str | None, domain: str | None = None) -> None:
    """Point CURRENT (the default), or ``domain``'s entry of DOMAINS.json, at a held version (or 'stub'),
    atomically and under ``locked``. ``version`` None with a domain removes its entry: the domain encodes with
    CURRENT again."""
    d = Path(model_dir)
    if version is None and domain is None:
        raise ValueError("set_current needs a version for the default (CURRENT); None only unsets a domain")
    if version is not None and version != STUB and version not in versions(d):
        raise UnknownVersionError(f"{d} does not hold {version!r} (it holds {', '.join(versions(d)) or 'none'})")
    with locked(d):
        if domain is None:
            _write_atomic(d / CURRENT, version + "\n")
            return
        mapping = domain_versions(d)  # read under the lock: a concurrent writer's entry is kept
        if version is None:
            mapping.pop(check_domain(domain), None)
        else:
            mapping[check_domain(domain)] = version
        _write_atomic(d / DOMAINS, json.dumps(dict(sorted(mapping.items())), indent=2, ensure_ascii=False) + "\n")


def register(artifact_dir, model_dir, version: str, make_current: bool = True, domain: str | None = None) -> Path:
    """Copy a verified artifact into ``model_dir/version``; point CURRENT at it (with ``domain``: that domain's
    entry instead; ``make_current`` False: neither). Call under ``locked``.

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
        set_current(d, version, domain=domain)
    return dest


def register_next(artifact_dir, model_dir, make_current: bool = False, domain: str | None = None) -> tuple[str, Path]:
    """Register an artifact as the directory's next version, under ``locked``: ``(version, its directory)``.

    An artifact exported under another version name (a training run's export, a copy of another version) is
    relabelled to that version first (``nbmf.artifact.relabel``: only the manifest changes). ``make_current``
    points CURRENT at it, or with ``domain`` only that domain's entry.
    """
    from nbmf.artifact import read_manifest, relabel

    d = Path(model_dir)
    if domain is not None:
        check_domain(domain)
    with locked(d):
        version = next_version(d)
        if read_manifest(artifact_dir).get("version") == version:
            return version, register(artifact_dir, d, version, make_current, domain)
        staging = Path(tempfile.mkdtemp(prefix=".register-", dir=d))
        try:
            staged = relabel(artifact_dir, staging / version, version)
            return version, register(staged, d, version, make_current, domain)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
