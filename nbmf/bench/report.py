"""Bench output: rich tables and gate lines on the terminal, a JSON file, a PNG plot, pairs JSONL."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

from nbmf.extras import require
from nbmf.record import TYPES  # the table's per-type columns


def _f(x, digits=2) -> str:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return "-"
    return f"{x:.{digits}f}"


def tables(result: dict):
    """(compression table, speed/fidelity table) as rich Tables."""
    Table = require("rich.table").Table
    n, raw = result["records"], result["raw_bytes"]
    comp = Table(title=f"nbmf bench: {result['input']} ({n} records, {raw:,} raw bytes) - ratio = raw / stored",
                 title_justify="left")
    for col in ("codec", "fidelity", *TYPES, "all", "bits/B", "mean", "p5", "p50", "min", "exact"):
        comp.add_column(col, justify="left" if col in ("codec", "fidelity") else "right")
    semantic = any(r["fidelity"] == "semantic" for r in result["rows"])
    speed = Table(title="per-record latency (ms, single thread, in process), throughput, fallbacks",
                  title_justify="left")
    cols = ["codec", "fidelity", "enc p50", "enc p95", "enc p99", "dec p50", "dec p95", "dec p99",
            "enc MB/s", "dec MB/s", "fallbacks", "errors"] + (["sim mean", "sim p5", "sim min"] if semantic else [])
    for col in cols:
        speed.add_column(col, justify="left" if col in ("codec", "fidelity") else "right")
    for row in result["rows"]:
        a = row["all"]
        name = row["codec"] + (" *" if row["extra_bytes"] else "")
        comp.add_row(name, row["fidelity"], *(_f(row["by_type"].get(t, {}).get("ratio")) for t in TYPES),
                     _f(a.get("ratio")), _f(a.get("bits_per_byte")), _f(a.get("ratio_mean")),
                     _f(a.get("ratio_p5")), _f(a.get("ratio_p50")), _f(a.get("ratio_min")),
                     f"{100 * a.get('exact_rate', 0):.1f}%")
        sim = [_f(100 * a[k], 2) if k in a else "-" for k in ("similarity_mean", "similarity_p5", "similarity_min")]
        speed.add_row(row["codec"], row["fidelity"],
                      *(_f(a.get(k), 3) for k in ("encode_ms_p50", "encode_ms_p95", "encode_ms_p99",
                                                  "decode_ms_p50", "decode_ms_p95", "decode_ms_p99")),
                      _f(a.get("encode_mb_s"), 1), _f(a.get("decode_mb_s"), 1),
                      str(row["fallbacks"]), str(a.get("errors", 0)), *(sim if semantic else []))
    return comp, speed


def gate_lines(result: dict, all_details: bool = False) -> list[str]:
    """PASS/FAIL lines: every gate for NBMF codecs, one summary line per anchor codec."""
    lines = []
    for row in result["rows"]:
        gates = row["gates"]
        if row["family"] == "nbmf" or all_details:
            for g in gates:
                lines.append(f"{'PASS' if g['passed'] else 'FAIL'}  {row['codec']:<14} {row['fidelity']:<9} "
                             f"{g['gate']:<36} {_f(g['value'], 4)} {g['op']} {g['threshold']}")
        else:
            failed = [g["gate"] for g in gates if not g["passed"]]
            fails = f" (fails: {'; '.join(failed)})" if failed else ""
            lines.append(f"{'PASS' if not failed else 'FAIL'}  {row['codec']:<14} {row['fidelity']:<9} "
                         f"{len(gates) - len(failed)}/{len(gates)} gates{fails}")
    return lines


def print_report(result: dict, console=None) -> None:
    Console = require("rich.console").Console
    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and pipes: never squeeze the table into 80 columns
            console = Console(width=max(console.width, 150))
    comp, speed = tables(result)
    console.print(comp)
    console.print(speed)
    d = result.get("dictionary")
    if d:
        console.print(f"* zstd dictionary: {d['bytes']:,} bytes (stored once, not counted per record), "
                      f"{d['samples']:,} samples from {d['train']} (seed {d['seed']})"
                      + (", from cache" if d.get("cached") else ""))
    for row in result["rows"]:
        if row.get("written_by"):
            console.print(f"{row['codec']} {row['fidelity']}: blobs by codec "
                          + ", ".join(f"{k} {n:,}" for k, n in row["written_by"].items())
                          + " (the registry keeps each record's smallest verified body)", highlight=False)
        if "ratio_code_hex_only" in row["all"]:
            console.print("legacy, ANCHORS.md definition (only the hex 'code' field, zlib-9 of the raw bytes): "
                          + ", ".join(f"{t} {row['by_type'][t]['ratio_code_hex_only']:.2f}" for t in row["by_type"])
                          + f", all {row['all']['ratio_code_hex_only']:.2f}")
        for msg in row.get("error_messages", []):
            console.print(f"[red]error[/red] {row['codec']} {row['fidelity']}: {msg}", markup=True, highlight=False)
    console.print("gates:")
    for line in gate_lines(result):
        console.print(("[green]" if line.startswith("PASS") else "[red]") + line[:4] + "[/]" + line[4:],
                      highlight=False)
    console.print(f"{result['elapsed_s']:.1f} s")


def _clean(obj):
    """JSON-safe copy: NaN/inf -> null, internal keys dropped."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if not k.startswith("_") and k != "pairs"}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    return obj


def write_json(result: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(_clean(result), indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def write_pairs(result: dict, path: str | Path) -> int:
    """The seed's training-pair records, one JSON object per line; returns the count."""
    with open(path, "w", encoding="utf-8") as f:
        for p in result["pairs"]:
            line = dict(p, compressed=base64.b64encode(p["compressed"]).decode("ascii"))
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return len(result["pairs"])


def write_plot(result: dict, path: str | Path) -> None:
    """Ratio vs record size per codec: faint points per record, a line through per-bin medians."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    fids = result["fidelities"]
    fig, axes = plt.subplots(1, len(fids), figsize=(7.5 * len(fids), 5.5), squeeze=False, sharey=True)
    cmap = plt.get_cmap("tab10")
    for ax, fid in zip(axes[0], fids):
        rows = [r for r in result["rows"] if r["fidelity"] == fid and r["_points"]]
        sizes_all = np.array([p[0] for r in rows for p in r["_points"]], dtype=float)
        lo, hi = max(1.0, sizes_all.min(initial=1.0)), max(2.0, sizes_all.max(initial=2.0))
        edges = np.geomspace(lo, hi * 1.0001, 13)
        for i, row in enumerate(rows):
            pts = np.array(row["_points"], dtype=float)
            size, ratio = pts[:, 0], np.divide(pts[:, 0], pts[:, 1], out=np.zeros(len(pts)), where=pts[:, 1] > 0)
            color = cmap(i % 10)
            ax.scatter(size, ratio, s=5, alpha=0.2, color=color, linewidths=0)
            idx = np.digitize(size, edges) - 1
            mids, meds = [], []
            for b in range(len(edges) - 1):
                sel = ratio[idx == b]
                if sel.size >= 3:
                    mids.append(math.sqrt(edges[b] * edges[b + 1]))
                    meds.append(float(np.median(sel)))
            ax.plot(mids, meds, "-o", ms=3, lw=1.8, color=color,
                    label=f"{row['codec']} (all {row['all'].get('ratio', float('nan')):.2f}x)")
        for y, style in ((2.0, "--"), (1.5, ":")):
            ax.axhline(y, color="grey", ls=style, lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("record size (raw bytes, log scale)")
        ax.set_title(f"{fid}: compression ratio by record size (line: bin median)")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=8, loc="upper left")
    axes[0][0].set_ylabel("ratio (raw / stored bytes)")
    fig.suptitle(f"{result['input']}: {result['records']} records; dashed 2x gate, dotted 1.5x", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
