"""Trained model -> int8 integer-runtime codec artifact, with its bench numbers in the manifest.

The numbers are measured on the artifact itself through the real codec and registry (the path users
take): compression ratio over whole blobs (header included; a record the neural coder would grow is
stored by the stub, as the registry does), exactness, and encode/decode latency per record.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

KIND_NAMES = ("text", "json", "bytes")


def payload_of(raw: bytes, kind: int):
    """The user-level payload a (raw, kind) row came from: str, parsed JSON or bytes."""
    if kind == 0:
        return raw.decode("utf-8", "surrogatepass")
    if kind == 1:
        return json.loads(raw.decode("utf-8", "surrogatepass"))
    return bytes(raw)


def measure_artifact(artifact_dir, rows: list[dict], repeats: int = 1) -> dict:
    """Ratio, bits/byte, exact rate and latency (ms) of an artifact's codec on ``rows`` ({raw, kind}).

    Decode latency is the best of ``repeats`` timings per record, so a busy machine inflates it less.
    """
    from nbmf.bench.metrics import Measurements, summarize
    from nbmf.codecs.neural import load_codec
    from nbmf.payload import to_raw
    from nbmf.registry import Registry

    codec = load_codec(artifact_dir)
    reg = Registry()
    reg.register(codec)
    m = Measurements.empty()
    for row in rows:
        raw, kind = bytes(row["raw"]), int(row["kind"])
        payload = payload_of(raw, kind)
        t0 = time.perf_counter()
        blob = reg.encode(payload, version=codec.name)
        enc = time.perf_counter() - t0
        dec = float("inf")
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            out = reg.decode(blob)
            dec = min(dec, time.perf_counter() - t0)
        exact = to_raw(out, kind)[0] == raw if kind != 2 else out == raw
        m.add(len(raw), len(blob), KIND_NAMES[kind], bool(exact), None, enc, dec)
    s = summarize(m)
    keep = ("n", "ratio", "bits_per_byte", "ratio_mean", "ratio_p5", "ratio_min", "exact_rate",
            "encode_ms_p50", "encode_ms_p95", "decode_ms_p50", "decode_ms_p95", "decode_ms_p99")
    out = {k: s[k] for k in keep if k in s}
    stats = getattr(reg, "stats", None)
    fallbacks = getattr(stats, "fallbacks", None)
    if fallbacks is not None:
        out["fallbacks"] = int(sum(dict(fallbacks).values()))
    return out


def cpu_copy(model):
    """A float CPU copy of a (possibly GPU, possibly DDP-unwrapped) CausalModel for export."""
    from nbmf.models import build_model

    copy = build_model(model.cfg)
    copy.load_state_dict({k: v.detach().to("cpu").float() for k, v in model.state_dict().items()})
    return copy.eval()


def export_with_bench(model, cfg, tokenizer, out_dir, *, version: str, rows: list[dict], val_bpb: float | None,
                      data_hash: str = "", training: dict | None = None, repeats: int = 3) -> dict:
    """Export ``model`` to ``out_dir`` with bench numbers measured on ``rows``; returns those numbers."""
    from nbmf.export import export_artifact

    model = cpu_copy(model)
    metrics: dict = {"val_bits_per_byte": val_bpb}
    out_dir = Path(out_dir)
    if rows:
        with tempfile.TemporaryDirectory(prefix="nbmf-export-") as tmp:
            probe = export_artifact(model, cfg, tokenizer, Path(tmp) / version, version=version,
                                    metrics=metrics, data_hash=data_hash, training=training or {})
            metrics.update(measure_artifact(probe, rows, repeats=repeats))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    export_artifact(model, cfg, tokenizer, out_dir, version=version, metrics=metrics,
                    data_hash=data_hash, training=training or {})
    return metrics
