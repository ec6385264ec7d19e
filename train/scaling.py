"""Benchmark: training throughput (tokens/s in total and per worker) as Ray Train workers are added.

    python -m train.scaling --config train/configs/tiny.yaml --workers 1 2 [key=value ...]

Every run trains the same preset on the same records (so the same tokens per epoch) with only
``scaling.num_workers`` changed; throughput is the median of the step logs after the first (which
includes warm-up). On GPUs: ``--config train/configs/small.yaml --workers 1 2 4 8``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from train.config import load
from train.driver import init_ray, run_training


def throughput(summary: dict) -> dict:
    state = json.loads((Path(summary["checkpoint"]) / "state.json").read_text())
    logs = [h for h in state["history"] if "tokens_per_s" in h][1:]
    return {"steps": state["step"], "tokens_per_s": statistics.median(h["tokens_per_s"] for h in logs),
            "tokens_per_s_per_worker": statistics.median(h["tokens_per_s_per_worker"] for h in logs),
            "seconds": summary["seconds"], "val_bpb": summary["metrics"].get("val_bpb")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--address", default="", help="Ray cluster (see python -m train --help)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    base = load(args.config, [*args.overrides, "export.enabled=false", "wandb.enabled=false"])
    init_ray(args.address)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nbmf-scaling-") as tmp:
        for n in args.workers:
            cfg = dataclasses.replace(base, scaling=dataclasses.replace(base.scaling, num_workers=n),
                                      run=dataclasses.replace(base.run, storage_path=tmp))
            summary = run_training(cfg, name=f"scaling-{n}w-{time.strftime('%H%M%S')}")
            rows.append({"workers": n, **throughput(summary)})
    one = rows[0]["tokens_per_s"] / rows[0]["workers"]
    print(f"{'workers':>7} {'steps':>6} {'tokens/s':>10} {'per worker':>10} {'efficiency':>10} {'wall s':>7} {'val bpb':>8}")
    for r in rows:
        r["efficiency"] = r["tokens_per_s"] / (one * r["workers"])
        print(f"{r['workers']:>7} {r['steps']:>6} {r['tokens_per_s']:>10.0f} {r['tokens_per_s_per_worker']:>10.0f} "
              f"{r['efficiency']:>10.2f} {r['seconds']:>7.1f} {r['val_bpb']:>8.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
