"""Release gates for a search winner, checked on the test split with `nbmf bench`'s own gate logic.

The gates are ``nbmf.bench.metrics.GATES`` (lossless ones); a search config may only move their
thresholds (a tiny CI model cannot reach the product's 2x, and a test needs a gate that fails).
"""
from __future__ import annotations

import dataclasses

from nbmf.record import Record


def gate_list(thresholds: dict[str, float] | None = None) -> list:
    from nbmf.bench.metrics import GATES

    thresholds = thresholds or {}
    return [dataclasses.replace(g, threshold=float(thresholds.get(g.metric, g.threshold)))
            for g in GATES if g.fidelity in ("both", "lossless")]


def validate(artifact_dir, rows: list[Record], thresholds: dict[str, float] | None = None) -> dict:
    """Bench ``artifact_dir`` on ``rows`` and check every gate: ``{passed, gates, summary, failed}``."""
    from train.export import bench_artifact

    row = bench_artifact(artifact_dir, rows)
    checks = [g.check(row["all"]) for g in gate_list(thresholds)]
    failed = [c for c in checks if not c["passed"]]
    return {
        "passed": not failed and not row["all"].get("errors"),
        "gates": checks,
        "failed": [f"{c['gate']}: {c['metric']} = {_fmt(c['value'])}, needs {c['op']} {c['threshold']}" for c in failed]
        + ([f"{row['all']['errors']} record(s) failed to encode/decode"] if row["all"].get("errors") else []),
        "summary": row["all"],
        "by_type": row["by_type"],
        "fallbacks": row["fallbacks"],
    }


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
