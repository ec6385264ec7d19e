"""Per-record choice of the classical fallback (issue 14): what the registry stores against zstd-19 with the dictionary.

    python bench/fallback_choice.py ../shared/corpus/val.jsonl --out bench/results/fallback_v1.json

For every record (lossless): the blob the registry writes with the current version, and the candidates it chose
from: the neural body, the fallback's magicless zstd frame (nbmf bench's zstd-19-dict frame less its 4-byte magic
number) and the stub's.
"before" is the rule the registry had until the fallback existed (the neural body if verified and smaller than the
stub's, else the stub's), computed from the same candidates. Reports the overall ratio (raw / stored, headers
included) and its quotient by zstd-19-dict's (frames alone, as `nbmf bench` counts them), the codec of each blob,
and the worst record against zstd-dict: min of zstd frame / blob, and max of blob - (frame + header), which the
registry holds at <= -4 (the fallback body, the frame less its magic, is always a candidate).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from nbmf import blob as blobfmt
from nbmf.bench.anchors import Zstd
from nbmf.codecs.fallback import MAGIC
from nbmf.data.corpus import iter_records
from nbmf.payload import from_raw
from nbmf.registry import Registry, default_model_dir


def measure(path: Path, model_dir: Path, batch: int = 64) -> dict:
    reg = Registry(model_dir)
    codec, fb = reg.codec(reg.current), reg.fallback(reg.current)
    if fb is None:
        raise SystemExit(f"{reg.current} ships no dictionary: nothing to measure")
    anchor = Zstd(dictionary=fb.dictionary)  # nbmf bench's zstd-19-dict row
    records = list(iter_records(path))
    raw_total = frames = before_total = after_total = 0
    kept: Counter = Counter()
    worst = {"before": (float("inf"), None), "after": (float("inf"), None)}
    over = {"before": (-(1 << 30), None), "after": (-(1 << 30), None)}
    t0 = time.perf_counter()
    for i in range(0, len(records), batch):
        part = records[i:i + batch]
        items = [(r.raw, r.kind) for r in part]
        blobs = reg.encode_many([from_raw(r.raw, r.kind) for r in part], kinds=[r.kind for r in part])
        small = [j for j, (raw, _) in enumerate(items) if len(raw) <= reg.neural_max_bytes]
        neural: list = [None] * len(items)
        for j, body in zip(small, codec.encode_many([items[j] for j in small], verify=True)):
            neural[j] = body
        bodies = fb.encode_many(items)
        for r, blob, n, f in zip(part, blobs, neural, bodies):
            z = anchor.compress(r.raw)
            assert MAGIC + f == z, r.id  # the fallback body is the anchor's frame less its magic
            h, body = blobfmt.unpack(blob)
            stub = reg.stub.encode_raw(r.raw)
            before = h.header_size + (len(n) if n is not None and len(n) < len(stub) else len(stub))
            assert len(body) == min(len(x) for x in (n, f, stub) if x is not None), r.id  # the registry's rule
            kept["stub" if h.encoder_id == 0 else "fallback" if h.fallback else "neural"] += 1
            raw_total, frames = raw_total + len(r.raw), frames + len(z)
            before_total, after_total = before_total + before, after_total + len(blob)
            for name, size in (("before", before), ("after", len(blob))):
                worst[name] = min(worst[name], (len(z) / size, r.id))
                over[name] = max(over[name], (size - (len(z) + h.header_size), r.id))
        print(f"{min(i + batch, len(records))}/{len(records)} records, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    zstd_ratio = raw_total / frames
    out = {"input": str(path), "version": reg.current, "records": len(records), "raw_bytes": raw_total,
           "dictionary": fb.dictionary_sha256, "zstd_19_dict": {"stored_bytes": frames, "ratio": zstd_ratio},
           "kept": dict(kept), "seconds": round(time.perf_counter() - t0, 1)}
    for name, total in (("before", before_total), ("after", after_total)):
        out[name] = {"stored_bytes": total, "ratio": raw_total / total, "vs_zstd_dict": raw_total / total / zstd_ratio,
                     "worst_zstd_over_blob": {"value": worst[name][0], "id": worst[name][1]},
                     "max_blob_minus_zstd_plus_header": {"bytes": over[name][0], "id": over[name][1]}}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="corpus JSONL (e.g. ../shared/corpus/val.jsonl)")
    p.add_argument("--model-dir", type=Path, default=None, help="model registry (default: nbmf's default)")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    a = p.parse_args(argv)
    result = measure(a.input, a.model_dir or default_model_dir())
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
