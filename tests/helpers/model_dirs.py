"""Model directories with several real versions, built from the repository's released model (no training).

``two_versions`` registers models/v1 as v1 and a relabelled copy of it as v2 through ``nbmf.modeldir`` (the same
calls `nbmf register` makes): the two hold one model, but blobs name their version in the header, so a test sees
which version wrote each one.
"""
from __future__ import annotations

from pathlib import Path

from nbmf import modeldir

RELEASED = Path(__file__).resolve().parents[2] / "models" / "v1"


def two_versions(out: Path, domains: dict[str, str] | None = None) -> Path:
    """``out`` as a model directory: v1 (CURRENT) and v2, and ``domains`` (domain -> version) in DOMAINS.json."""
    out = Path(out)
    assert modeldir.register_next(RELEASED, out, make_current=True)[0] == "v1"
    assert modeldir.register_next(RELEASED, out)[0] == "v2"
    for domain, version in (domains or {}).items():
        modeldir.set_current(out, version, domain=domain)
    return out
