"""Registration of a searched model in the model directory: the tune-facing names for ``nbmf.modeldir``.

``nbmf.modeldir`` owns the directory (version names, ``CURRENT``, the lock, the atomic copy-and-rename
that never replaces a registered version); the search driver and the pipeline call it through here:

    with register.locked(registry_dir):
        version = register.next_version(registry_dir)
        ...export the winning checkpoint as `version`...
        register.register(staged, registry_dir, version, set_current=True)
"""
from __future__ import annotations

from pathlib import Path

from nbmf import modeldir
from nbmf.modeldir import CURRENT, current, locked, next_version, versions
from nbmf.modeldir import ModelDirError as RegistryError

__all__ = ["CURRENT", "RegistryError", "current", "locked", "next_version", "register", "versions"]


def register(artifact_dir, registry_dir, version: str, set_current: bool = True) -> Path:
    """Copy a verified artifact into ``registry_dir/version``; point CURRENT at it. Call under ``locked``."""
    return modeldir.register(artifact_dir, registry_dir, version, make_current=set_current)
