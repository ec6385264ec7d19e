"""Per record, what a match model gains over the same model without one: neural body sizes, by type and size.

    python bench/match_gain.py models/v1 models/v2 --val ../shared/corpus/val.jsonl --out bench/results/match_v2.json

Both artifacts code every val record (lossless, in process, single thread); the zstd-19 frame with the base
artifact's dictionary (nbmf.codecs.fallback, the anchor's recipe) is measured on the same records as the baseline.
Rows: record type x raw size class (structured >= 4 KB is the repetition-heavy class: large JSON objects).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nbmf.artifact import read_dictionary, read_manifest
from nbmf.codecs.fallback import FallbackCodec
from nbmf.codecs.neural import load_codec
from nbmf.data.corpus import iter_records

SIZES = ((0, 1024, "< 1 KB"), (1024, 4096, "1-4 KB"), (4096, 1 << 40, ">= 4 KB"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", type=Path)
    p.add_argument("candidate", type=Path)
    p.add_argument("--val", default="../shared/corpus/val.jsonl")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    records = list(iter_records(a.val))
    items = [(r.raw, r.kind) for r in records]
    base, cand = load_codec(a.base, threads=1), load_codec(a.candidate, threads=1)
    fb = FallbackCodec(base.name, read_dictionary(a.base, read_manifest(a.base)))
    sizes = {}
    for name, codec in (("base", base), ("candidate", cand), ("zstd_dict", fb)):
        bodies = codec.encode_many(items)
        sizes[name] = np.array([len(b) if b is not None else np.nan for b in bodies], np.float64)
    raw = np.array([len(r) for r, _ in items], np.float64)
    types = np.array([r.type for r in records])
    rows = []
    for t in ["all", *sorted(set(types))]:
        for lo, hi, label in ((0, 1 << 40, "all"), *SIZES):
            sel = ((types == t) | (t == "all")) & (raw >= lo) & (raw < hi)
            sel &= ~np.isnan(sizes["base"]) & ~np.isnan(sizes["candidate"])
            if not sel.any():
                continue
            b, c, z = (sizes[k][sel].sum() for k in ("base", "candidate", "zstd_dict"))
            gain = sizes["base"][sel] / sizes["candidate"][sel]
            rows.append({"type": t, "size": label, "records": int(sel.sum()), "raw_bytes": int(raw[sel].sum()),
                         "base_body_bytes": int(b), "candidate_body_bytes": int(c), "zstd_dict_bytes": int(z),
                         "gain": b / c, "base_vs_zstd_dict": z / b, "candidate_vs_zstd_dict": z / c,
                         "worse_records": int((sizes["candidate"][sel] > sizes["base"][sel]).sum()),
                         "gain_min": float(gain.min()), "gain_p50": float(np.median(gain))})
            r = rows[-1]
            print(f"{t:13s} {label:8s} {r['records']:5d} rec  body {r['base_body_bytes']:9,d} -> "
                  f"{r['candidate_body_bytes']:9,d}  gain {r['gain']:.3f}x (min {r['gain_min']:.3f}, "
                  f"{r['worse_records']} worse)  vs zstd-dict {r['base_vs_zstd_dict']:.3f}x -> "
                  f"{r['candidate_vs_zstd_dict']:.3f}x", flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"base": str(a.base), "candidate": str(a.candidate), "val": a.val,
                                     "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
