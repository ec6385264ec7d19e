"""Registration of a candidate model in the model directory: the tune-facing names for ``nbmf.modeldir``, and
``register_gated``, the one way a trained model enters a registry (the search driver and the main job call it).

``nbmf.modeldir`` owns the directory (version names, ``CURRENT``, the lock, the atomic copy-and-rename
that never replaces a registered version):

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
from nbmf.record import Record

__all__ = ["CURRENT", "RegistryError", "current", "locked", "next_version", "register", "register_gated", "versions"]


def register(artifact_dir, registry_dir, version: str, set_current: bool = True) -> Path:
    """Copy a verified artifact into ``registry_dir/version``; point CURRENT at it. Call under ``locked``."""
    return modeldir.register(artifact_dir, registry_dir, version, make_current=set_current)


def register_gated(artifact_dir, registry_dir, test_rows: list[Record], thresholds: dict[str, float] | None = None,
                   *, staging: Path, set_current: bool = True) -> dict:
    """Register an exported artifact as the registry's next version only if it earns it on ``test_rows``: every
    gate passes (tune.gates) AND, when the registry has a current version, it is at least as good as that version
    on the same rows. Registered under the registry's lock (the version it is staged as is the one it is
    registered as); the registered manifest carries the test figures as ``test_*`` metrics. The outcome says
    what was decided and why (``reason`` when nothing was registered).

    ``registry_dir`` may be a URI (s3://, gs://): the registry is copied to a local mirror, the version is
    registered there (same checks, same numbering), then uploaded as ``<uri>/vN`` (refused if it exists: never
    overwritten) and ``CURRENT`` rewritten last. Object stores have no lock: two searches registering into one
    URI at the same moment can pick the same number, and the second upload is then refused.
    """
    import tempfile

    from nbmf.artifact import relabel
    from train import storage as st
    from tune import gates

    remote = st.resolve(registry_dir) if st.is_uri(str(registry_dir)) else ""
    local = Path(tempfile.mkdtemp(prefix="nbmf-registry-")) / "registry" if remote else Path(registry_dir).resolve()
    if remote and st.exists(remote):
        st.copy_dir(remote, str(local))
    now = current(local)
    against = (now, local / now) if now else None
    check = gates.validate(artifact_dir, test_rows, thresholds, against=against)
    outcome = {"gates": check["gates"], "failed": check["failed"], "test": check["summary"],
               "test_by_type": check["by_type"], "current": now, "current_test": check["current"],
               "registered": False, "registry": remote or str(local)}
    if not check["passed"]:
        outcome["reason"] = "refused on the test split: " + "; ".join(check["failed"])
        return outcome
    test_metrics = {f"test_{k}": v for k, v in check["summary"].items() if isinstance(v, (int, float))}
    with locked(local):
        version = next_version(local)
        staged = relabel(artifact_dir, Path(staging) / version, version, metrics=test_metrics)
        dest = register(staged, local, version, set_current=set_current)
    outcome.update(registered=True, version=version, path=str(dest), local_path=str(dest), current=current(local),
                   reason=f"passed every gate{f' and is at least as good as {now}' if now else ''} on "
                          f"{len(test_rows)} test records")
    if remote:
        st.upload_new(dest, st.join(remote, version))
        if set_current:
            st.write_text(st.join(remote, CURRENT), (local / CURRENT).read_text())
        outcome["path"] = st.join(remote, version)
    return outcome
