"""Ratio vs decode latency of neural artifacts and their attention-window variants: the Pareto front.

    python bench/neural_pareto.py models/v1 [more artifact dirs] --records 300 --windows 256 128 64 \
        --out bench/results/pareto.json --plot bench/results/pareto.png

For each artifact (and each decode window for models with attention; the window is part of a model's
definition, so each is a distinct encoder), it encodes and decodes the same val records single-threaded,
in process, and reports the aggregate ratio (the whole NBMF blob, header included, as ``nbmf bench``
counts it), bits per byte, and per-record decode / encode latency p50 / p95 (``nbmf.bench.metrics``: one
percentile and one Pareto front for every NBMF figure). Decode reads the blob back through its header.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from nbmf import blob
from nbmf.artifact import load_artifact
from nbmf.bench.metrics import pareto_front, percentile
from nbmf.codecs.neural import NeuralCodec
from nbmf.data.corpus import iter_records


def measure(codec: NeuralCodec, items) -> dict:
    raw_bytes = sum(len(r) for r, _ in items)
    stored, enc_t, dec_t, exact = 0, [], [], 0
    codec.encode_many(items[:2])  # compile / warm
    for raw, kind in items:
        t = time.perf_counter()
        body = codec.encode_many([(raw, kind)], verify=True)[0]
        stored_blob = blob.pack(encoder_id=codec.encoder_id, fidelity=blob.Fidelity.LOSSLESS, kind=blob.Kind(kind),
                                original_length=len(raw), body=body)
        enc_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        header, body = blob.unpack(stored_blob)
        back = codec.decode_raw(body, header.kind, header.original_length)
        dec_t.append(time.perf_counter() - t)
        exact += back == raw
        stored += len(stored_blob)
    return {"ratio": raw_bytes / stored, "bits_per_byte": 8 * stored / raw_bytes, "exact": exact / len(items),
            "decode_p50_ms": 1e3 * percentile(dec_t, 50), "decode_p95_ms": 1e3 * percentile(dec_t, 95),
            "encode_p50_ms": 1e3 * percentile(enc_t, 50), "encode_p95_ms": 1e3 * percentile(enc_t, 95)}


def variants(path: Path, windows: list[int]):
    from nbmf.runtime.intmodel import IntModel

    manifest, cfg, int_model, tok = load_artifact(path)
    if "attention" not in cfg.mixers():
        yield f"{path.name} {cfg.family}", NeuralCodec(manifest["version"], cfg, int_model, tok, manifest)
        return
    for w in windows:
        c = dataclasses.replace(cfg, context=w)
        yield (f"{path.name} {cfg.family} d={cfg.d_model} L={cfg.n_layers} window={w}",
               NeuralCodec(manifest["version"], c, IntModel(c, int_model.storable(), int_model.match), tok, manifest))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifacts", nargs="+", type=Path)
    p.add_argument("--val", default="../shared/corpus/val.jsonl")
    p.add_argument("--records", type=int, default=300, help="val records (evenly spaced sample)")
    p.add_argument("--windows", type=int, nargs="+", default=[256, 128, 64])
    p.add_argument("--out", type=Path)
    p.add_argument("--plot", type=Path)
    a = p.parse_args(argv)
    records = list(iter_records(a.val))
    pick = np.linspace(0, len(records) - 1, min(a.records, len(records))).astype(int)
    items = [(records[i].raw, records[i].kind) for i in pick]  # the codec's batch items
    rows = []
    for path in a.artifacts:
        for name, codec in variants(path, a.windows):
            row = {"name": name, **measure(codec, items)}
            rows.append(row)
            print(f"{name:55s} ratio {row['ratio']:.3f}  {row['bits_per_byte']:.3f} bpb  decode p95 "
                  f"{row['decode_p95_ms']:.1f} ms  encode p95 {row['encode_p95_ms']:.1f} ms  exact {row['exact']:.0%}", flush=True)
    front = [rows[i] for i in pareto_front([(r["decode_p95_ms"], r["ratio"]) for r in rows])]
    print("Pareto front (ratio vs decode p95):")
    for r in front:
        print(f"  {r['name']:55s} {r['ratio']:.3f}x  {r['decode_p95_ms']:.1f} ms")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"records": len(items), "rows": rows, "pareto": front}, indent=2))
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.scatter([r["decode_p95_ms"] for r in rows], [r["ratio"] for r in rows], color="0.6", label="variants")
        ax.plot([r["decode_p95_ms"] for r in front], [r["ratio"] for r in front], "o-", color="C0", label="Pareto front")
        for r in rows:
            ax.annotate(r["name"].split(" ", 1)[1], (r["decode_p95_ms"], r["ratio"]), fontsize=7)
        ax.axvline(120, color="C3", ls="--", label="p95 budget 120 ms")
        ax.set_xlabel("decode p95 per record (ms, single thread)")
        ax.set_ylabel("compression ratio (raw / blob)")
        ax.legend()
        fig.tight_layout()
        a.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.plot, dpi=120)


if __name__ == "__main__":
    main()
