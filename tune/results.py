"""The search's results: a table of every trial (terminal, CSV, JSON) and ratio vs decode latency (PNG).

The Pareto front is the set of measured trials no other trial beats on both axes (higher ratio and
lower decode p95); the latency budget is drawn as a vertical line.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from nbmf.bench.metrics import pareto_front

COLUMNS = ("trial", "family", "d_model", "n_layers", "vocab_size", "lr", "status", "epochs", "val_bpb",
           "ratio", "decode_ms_p95", "eligible", "winner", "note")


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return "" if v is None else str(v)


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in COLUMNS})


def write_json(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in COLUMNS:
        t.add_column(c, justify="right" if c not in ("trial", "family", "status", "note") else "left")
    for r in rows:
        t.add_row(*(_cell(r.get(c)) for c in COLUMNS), style="bold green" if r.get("winner") else None)
    Console(width=200).print(t)


def plot(rows: list[dict], path: Path, budget_ms: float) -> None:
    """Ratio vs decode p95 of every measured trial, the Pareto front and the latency budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get("ratio") is not None and r.get("decode_ms_p95") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    families = sorted({r.get("family") or "?" for r in pts})
    markers = dict(zip(families, "osD^v<>p*"))
    for fam in families:
        sel = [r for r in pts if (r.get("family") or "?") == fam]
        ax.scatter([r["decode_ms_p95"] for r in sel], [r["ratio"] for r in sel], marker=markers[fam], s=40,
                   label=fam, alpha=0.85)
    front = [pts[i] for i in pareto_front([(r["decode_ms_p95"], r["ratio"]) for r in pts])]
    if front:
        ax.step([r["decode_ms_p95"] for r in front], [r["ratio"] for r in front], where="post", color="k",
                lw=1, ls="--", label="Pareto front")
    for r in pts:
        ax.annotate(str(r["trial"]), (r["decode_ms_p95"], r["ratio"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    win = [r for r in pts if r.get("winner")]
    if win:
        ax.scatter([win[0]["decode_ms_p95"]], [win[0]["ratio"]], s=200, facecolors="none", edgecolors="green",
                   lw=2, label="winner")
    ax.axvline(budget_ms, color="red", lw=1, label=f"budget {budget_ms:g} ms")
    ax.set_xlabel("decode latency p95 per record (ms)")
    ax.set_ylabel("compression ratio (raw / stored)")
    ax.set_title("Search trials: compression vs decode latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


GATE_COLUMNS = ("gate", "metric", "value", "op", "threshold", "passed")


def log_search(report: dict, out_dir: Path, *, project: str = "nbmf", mode: str = "", directory: str,
               sync_to: str = "") -> dict:
    """The search-level W&B run (job_type "search", grouped with its trials): the trials table, the Pareto plot,
    the winner, its gates and per-type test results, the anchors on the same test records, and the registered
    version's artifact with its aliases (``candidate``; ``production`` when CURRENT points at it)."""
    from train.wandb_logging import RunLogger

    name = report["search"]
    outcome = report["outcome"]
    logger = RunLogger(enabled=True, project=project, group=name, name=f"{name}-search", mode=mode,
                       directory=directory, config=report["config"], job_type="search", sync_to=sync_to)
    rows = report["trials"]
    logger.table("search/trials", rows, COLUMNS)
    logger.image("search/pareto", Path(out_dir) / "pareto.png", caption="ratio vs decode p95; winner circled")
    winner = next((r for r in rows if r.get("winner")), None)
    summary = {"trials": len(rows), "finished": sum(r["status"] == "finished" for r in rows),
               "stopped": sum(r["status"] == "stopped" for r in rows), "winner": report.get("winner") or "",
               "registered": bool(outcome.get("registered")), "version": outcome.get("version") or "",
               "reason": outcome.get("reason") or "", "seconds": report.get("seconds")}
    if winner:
        summary.update({f"winner/{k}": winner.get(k) for k in ("ratio", "decode_ms_p95", "val_bpb", "family",
                                                                 "d_model", "n_layers", "vocab_size", "lr")})
    if outcome.get("test"):
        summary.update({f"test/{k}": v for k, v in outcome["test"].items() if isinstance(v, (int, float))})
    logger.summary(summary)
    if outcome.get("gates"):
        logger.table("search/gates", outcome["gates"], GATE_COLUMNS)
    if outcome.get("test_by_type"):
        logger.by_type("search/test_by_type", outcome["test_by_type"])
    if report.get("references"):
        logger.references(report["references"], ours=(outcome.get("test") or {}).get("ratio"))
    link = {}
    if outcome.get("registered"):
        aliases = ["candidate"] + (["production"] if outcome.get("current") == outcome["version"] else [])
        link = logger.register(outcome["local_path"], "nbmf-codec", outcome["version"], aliases=aliases,
                               metadata={"search": name, "trial": outcome.get("trial"),
                                         "registry": outcome["registry"]})
    logger.finish()
    return {"link": link, "synced": logger.synced}
