"""Cut the bundled sample data/sample/{train,val}.jsonl from ../shared/corpus.

    python bench/cut_sample.py --corpus ../shared/corpus --out data/sample

Why: tests, CI and `python -m pipeline` need real records without the 50 MB corpus. The cut is
deterministic (no RNG state, only sha256 of seed and record id) and stratified: every
(type, source) stratum of a split gets a byte budget proportional to its share of that split's
file, and takes records in sha256(seed:id) order until the budget is spent. Lines are copied
byte for byte, so every sample record is a corpus record. The corpus already keeps units
(dialogue/document/package) out of more than one split; a subset keeps that property.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import defaultdict
from pathlib import Path

DEFAULT_BUDGETS = {"train": 3_000_000, "val": 500_000}  # bytes of JSONL per output file


def _rank(seed: int, record_id: str) -> str:
    return hashlib.sha256(f"{seed}:{record_id}".encode()).hexdigest()


def cut(src: Path, budget: int, seed: int) -> tuple[list[bytes], dict]:
    """Return the chosen lines (in rank order) and per-stratum counts for PROVENANCE."""
    strata: dict[tuple[str, str], list[tuple[str, bytes]]] = defaultdict(list)
    total = 0
    with src.open("rb") as f:
        for line in f:
            rec = json.loads(line)
            key = (rec["type"], rec["metadata"]["source"])
            strata[key].append((_rank(seed, rec["id"]), line if line.endswith(b"\n") else line + b"\n"))
            total += len(line)
    chosen: list[tuple[str, bytes]] = []
    stats = {}
    for key in sorted(strata):
        lines = sorted(strata[key])
        share = budget * sum(len(line) for _, line in lines) / total
        used = 0
        n = 0
        for rank, line in lines:
            if used >= share:
                break
            chosen.append((rank, line))
            used += len(line)
            n += 1
        stats["/".join(key)] = {"records": n, "bytes": used, "of_records": len(lines)}
    chosen.sort()
    return [line for _, line in chosen], stats


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    ap.add_argument("--out", type=Path, default=Path("data/sample"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-bytes", type=int, default=DEFAULT_BUDGETS["train"])
    ap.add_argument("--val-bytes", type=int, default=DEFAULT_BUDGETS["val"])
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {}
    for split, budget in (("train", args.train_bytes), ("val", args.val_bytes)):
        src = args.corpus / f"{split}.jsonl"
        lines, stats = cut(src, budget, args.seed)
        (args.out / f"{split}.jsonl").write_bytes(b"".join(lines))
        report[split] = {
            "source_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
            "records": len(lines),
            "bytes": sum(map(len, lines)),
            "strata": stats,
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
