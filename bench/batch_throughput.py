"""Decode throughput of a neural artifact at batch 1 vs records decoded in lockstep (same bits either way).

    python bench/batch_throughput.py models/v1 --records 256 --batches 1 32
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from nbmf.codecs.neural import load_codec
from nbmf.models.batching import corpus_raw


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", type=Path)
    p.add_argument("--val", default="../shared/corpus/val.jsonl")
    p.add_argument("--records", type=int, default=256)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    a = p.parse_args(argv)
    codec = load_codec(a.artifact)
    lines = Path(a.val).read_text(encoding="utf-8").splitlines()
    pick = np.linspace(0, len(lines) - 1, min(a.records, len(lines))).astype(int)
    items = [corpus_raw(json.loads(lines[i])) for i in pick]
    bodies = codec.encode_many(items)
    jobs = [(b, k, len(r)) for b, (r, k) in zip(bodies, items)]
    codec.decode_many(jobs[:2])
    n_bytes = sum(len(r) for r, _ in items)
    reference = None
    for batch in a.batches:
        t = time.perf_counter()
        out = []
        for i in range(0, len(jobs), batch):
            out += codec.decode_many(jobs[i : i + batch])
        dt = time.perf_counter() - t
        assert out == [r for r, _ in items], "decode mismatch"
        reference = reference or out
        assert out == reference
        print(f"batch {batch:3d}: {len(items) / dt:7.1f} records/s  {n_bytes / dt / 1e6:6.3f} MB/s  ({dt:.1f} s, identical bytes)")


if __name__ == "__main__":
    main()
