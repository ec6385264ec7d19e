"""Release gates for a candidate model, checked on the test split with `nbmf bench`'s own gate logic, and the
comparison that keeps a regression from ever being registered or canaried.

The gates are ``nbmf.bench.metrics.GATES`` (lossless ones), thresholds as `nbmf bench` checks them. A search
config may move a threshold for its scratch registry (a test needs a gate that fails); the main job and the
release use them unchanged. ``against`` adds one more check: the candidate's overall ratio (raw bytes / stored
bytes, what storage costs) on the same test rows must be at least the current version's.
"""
from __future__ import annotations

import dataclasses

from nbmf.record import Record

COMPARE_METRIC = "ratio"  # overall raw / stored bytes on the test rows (nbmf bench's "ratio")


def gate_list(thresholds: dict[str, float] | None = None) -> list:
    from nbmf.bench.metrics import GATES

    thresholds = thresholds or {}
    return [dataclasses.replace(g, threshold=float(thresholds.get(g.metric, g.threshold)))
            for g in GATES if g.fidelity in ("both", "lossless")]


def compare(candidate: dict, current: dict, version: str) -> dict:
    """The check "at least as good as ``version``" on two bench summaries of the same rows (gate-check shape)."""
    value, threshold = candidate[COMPARE_METRIC], current[COMPARE_METRIC]
    return {"gate": f"at least as good as {version} (overall ratio)", "metric": COMPARE_METRIC, "op": ">=",
            "threshold": threshold, "value": value, "passed": bool(value >= threshold)}


def validate(artifact_dir, rows: list[Record], thresholds: dict[str, float] | None = None,
             against: tuple[str, object] | None = None) -> dict:
    """Bench ``artifact_dir`` on ``rows`` and check every gate: ``{passed, gates, summary, failed}``; with
    ``against`` = (version name, its artifact dir), also bench that version on the same rows and require the
    candidate to be at least as good (its summary under ``current``)."""
    from train.export import bench_artifact

    row = bench_artifact(artifact_dir, rows)
    checks = [g.check(row["all"]) for g in gate_list(thresholds)]
    current = None
    if against is not None:
        current = bench_artifact(against[1], rows)["all"]
        checks.append(compare(row["all"], current, against[0]))
    failed = [c for c in checks if not c["passed"]]
    return {
        "passed": not failed and not row["all"].get("errors"),
        "gates": checks,
        "failed": [f"{c['gate']}: {c['metric']} = {_fmt(c['value'])}, needs {c['op']} {_fmt(c['threshold'])}"
                   for c in failed]
        + ([f"{row['all']['errors']} record(s) failed to encode/decode"] if row["all"].get("errors") else []),
        "summary": row["all"],
        "current": current,
        "by_type": row["by_type"],
        "fallbacks": row["fallbacks"],
    }


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
