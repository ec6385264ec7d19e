"""The model registry directory (docs/ARCHITECTURE.md): ``vN/`` artifact dirs plus a ``CURRENT`` pointer.

Registering never touches an existing version (blobs written by earlier versions must stay
decodable), copies the new artifact in under a temporary name and renames it into place, then
replaces CURRENT atomically. A lock file serializes searches that finish at the same time.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

VERSION = re.compile(r"v([1-9][0-9]*)")
CURRENT = "CURRENT"


class RegistryError(RuntimeError):
    """The registry directory cannot take this version."""


def versions(registry_dir) -> list[str]:
    """Registered versions (directories vN holding a manifest.json), oldest first."""
    d = Path(registry_dir)
    if not d.is_dir():
        return []
    found = [p.name for p in d.iterdir() if p.is_dir() and VERSION.fullmatch(p.name) and (p / "manifest.json").is_file()]
    return sorted(found, key=lambda v: int(v[1:]))


def next_version(registry_dir) -> str:
    """One past the highest version directory (a half-written one counts too, so it is never reused)."""
    d = Path(registry_dir)
    taken = [int(m.group(1)) for p in (d.iterdir() if d.is_dir() else [])
             if (m := VERSION.fullmatch(p.name.lstrip(".").removesuffix(".tmp")))]
    return f"v{max(taken, default=0) + 1}"


def current(registry_dir) -> str | None:
    f = Path(registry_dir) / CURRENT
    return f.read_text(encoding="utf-8").strip() or None if f.is_file() else None


@contextmanager
def locked(registry_dir):
    """Exclusive lock on the registry for the duration of a version allocation + registration."""
    d = Path(registry_dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield d
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def register(artifact_dir, registry_dir, version: str, set_current: bool = True) -> Path:
    """Copy a verified artifact into ``registry_dir/version``; point CURRENT at it. Call under ``locked``."""
    from nbmf.artifact import read_manifest

    manifest = read_manifest(artifact_dir)  # verifies every file's sha256
    if manifest.get("version") != version:
        raise RegistryError(f"artifact {artifact_dir} was exported as {manifest.get('version')!r}, not {version!r}: "
                            "re-export it with the version it is registered under")
    d = Path(registry_dir)
    dest = d / version
    if dest.exists():
        raise RegistryError(f"{dest} already exists: registered versions are never replaced")
    tmp = d / f".{version}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(artifact_dir, tmp)
    read_manifest(tmp)
    os.rename(tmp, dest)
    if set_current:
        ptr = d / f".{CURRENT}.tmp"
        ptr.write_text(version + "\n", encoding="utf-8")
        os.replace(ptr, d / CURRENT)
    return dest
