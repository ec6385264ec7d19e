"""Trained model -> int8 integer-runtime codec artifact, with its bench numbers in the manifest.

Every training export writes one manifest schema, built here: ``metrics`` (``val_bits_per_byte``, ``params``,
``steps`` and the bench numbers below) and ``training`` (``provenance``: the exact commands, the whole
config, the validation history, steps, trained seconds, workers, the warm-start artifact) beside the
``training_data`` hash; nbmf.export.export_artifact writes them.

The numbers come from `nbmf bench`'s own measurement (``nbmf.bench.run.run_codec``) on the artifact,
through the real codec registry (the path users take): whole blobs (header included; each record
stored by the smallest of the neural coder, the zstd fallback and the stub, as the registry does),
exactness, encode/decode latency per record, single thread.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from nbmf.record import Record

# Summary numbers copied into manifests and trial metrics.
BENCH_KEYS = ("n", "ratio", "bits_per_byte", "ratio_mean", "ratio_p5", "ratio_min", "exact_rate",
              "encode_ms_p50", "encode_ms_p95", "decode_ms_p50", "decode_ms_p95", "decode_ms_p99", "errors")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


def registry_with(artifact_dir):
    """(registry, version name) holding the stub and this one artifact's codec."""
    from nbmf.codecs.neural import load_codec
    from nbmf.registry import Registry

    codec = load_codec(artifact_dir)
    reg = Registry()
    reg.register(codec)
    return reg, codec.name


def bench_artifact(artifact_dir, rows: list[Record]) -> dict:
    """`nbmf bench`'s lossless result row ("all", "by_type", "gates", "fallbacks"; "_points": per record (raw,
    stored) bytes, what its plot draws) for one artifact."""
    from nbmf.bench.run import RegistryVersion, run_codec

    reg, version = registry_with(artifact_dir)
    return run_codec(RegistryVersion(reg, version), rows, "lossless", None, _NoBar())


def measure_artifact(artifact_dir, rows: list[Record], repeats: int = 1) -> dict:
    """Headline numbers (ratio, bits/byte, exact rate, latencies in ms, fallbacks) on ``rows``.

    With ``repeats`` > 1 the whole pass runs that many times and each latency percentile keeps its
    best value, so a busy machine inflates it less; sizes and exactness are identical every pass.
    """
    best: dict = {}
    for _ in range(max(1, repeats)):
        row = bench_artifact(artifact_dir, rows)
        s = {k: row["all"][k] for k in BENCH_KEYS if k in row["all"]}
        s["fallbacks"] = row["fallbacks"]
        s["row"] = row  # the whole bench row (per type, per record points): sizes are the same each pass
        for k, v in s.items():
            best[k] = min(best[k], v) if k.endswith(("_p50", "_p95", "_p99")) and k in best else v
    return best


def anchor_codecs(dictionary: bytes | None) -> list:
    """``nbmf bench``'s zstd-dict (with the run's dictionary) and brotli anchors: the reference values."""
    from nbmf.bench import anchors

    return [anchors.Zstd(19, dictionary), anchors.Brotli(11)] if dictionary else [anchors.Brotli(11)]


def anchor_ratios(rows: list[Record], dictionary: bytes | None) -> dict[str, float]:
    """Compression ratio of the zstd-dict and brotli anchors (``nbmf bench``'s) on ``rows``: the reference values."""
    from nbmf.bench.run import run_codec

    return {c.name: run_codec(c, rows, "lossless", None, _NoBar())["all"]["ratio"]
            for c in anchor_codecs(dictionary) if rows}


def bench_plot(row: dict, rows: list[Record], dictionary: bytes | None, path) -> dict[str, float]:
    """``nbmf bench``'s plot (ratio by record size) of an artifact's bench ``row`` (``bench_artifact``'s, on
    ``rows``) and the anchors on the same ``rows``, written to ``path``; returns the anchors' ratios (what
    ``anchor_ratios`` gives), measured in the same pass."""
    from nbmf.bench.report import write_plot
    from nbmf.bench.run import run_codec

    anchors = [run_codec(c, rows, "lossless", None, _NoBar()) for c in anchor_codecs(dictionary)]
    write_plot({"fidelities": ["lossless"], "rows": [row, *anchors], "input": "bench records",
                "records": len(rows)}, path)
    return {r["codec"]: r["all"]["ratio"] for r in anchors}


def cpu_copy(model):
    """A float CPU copy of a (possibly GPU) CausalModel for export."""
    from nbmf.models import build_model

    copy = build_model(model.cfg)
    copy.load_state_dict({k: v.detach().to("cpu").float() for k, v in model.state_dict().items()})
    return copy.eval()


def provenance(job: dict, state: dict, warm_start: dict | None = None) -> dict:
    """The manifest's ``training`` object: how the model was made, enough to make it again.

    ``job``: the TrainJobConfig as a dict; ``state``: the loop's state (checkpoint ``state.json``);
    ``warm_start``: where ``init_from`` started (path, version, fingerprint), None for a fresh model."""
    return {
        "commands": list(state.get("commands", [])),  # one per invocation: a run resumed N times lists N+1
        "config": job,
        "history": [h for h in state.get("history", []) if "val_bits_per_byte" in h],
        "steps": state.get("step"),
        "steps_per_epoch": state.get("steps_per_epoch"),
        "trained_seconds": round(float(state.get("trained_s", 0.0)), 1),
        "resumed_from": list(state.get("resumed_from", [])),
        "workers": job.get("scaling", {}).get("num_workers"),
        "init_from": warm_start,
    }


def export_with_bench(model, cfg, tokenizer, out_dir, *, version: str, rows: list[Record], val_bpb: float | None,
                      data_hash: str = "", training: dict | None = None, repeats: int = 1,
                      dictionary: bytes | None = None, dictionary_info: dict | None = None,
                      decode_window: int = 0, match: dict | None = None) -> dict:
    """Export ``model`` (with the fallback's ``dictionary``, nbmf.dictionary) to ``out_dir`` with bench numbers
    measured on ``rows``; returns those numbers (plus ``row``, the whole bench row, which the manifest leaves out). ``decode_window`` > 0: the artifact's attention window at decode
    (its manifest's ``context``), else the training context. ``match``: a warm start's match model
    (``train.warmstart.WarmStart.match``), attached to the new artifact (and measured with it)."""
    import dataclasses

    from nbmf.export import export_artifact

    model = cpu_copy(model)
    if decode_window:
        cfg = dataclasses.replace(cfg, context=decode_window)  # ALiBi: any window; fewer keys decode faster
    metrics: dict = {"val_bits_per_byte": val_bpb, "params": model.num_params(),
                     "steps": (training or {}).get("steps")}
    out_dir = Path(out_dir)
    extra = {"data_hash": data_hash, "training": training or {}, "dictionary": dictionary,
             "dictionary_info": dictionary_info}
    def write(dest: Path) -> Path:
        out = export_artifact(model, cfg, tokenizer, dest, version=version, metrics=metrics, **extra)
        if match:
            from nbmf.artifact import attach_match

            attach_match(out, match["json"].encode("utf-8"), {**match["about"], "carried_from": "init_from"})
        return out

    if rows:
        with tempfile.TemporaryDirectory(prefix="nbmf-export-") as tmp:
            metrics.update(measure_artifact(write(Path(tmp) / version), rows, repeats=repeats))
    row = metrics.pop("row", None)  # for the run's log; the manifest keeps the headline numbers
    if out_dir.exists():
        shutil.rmtree(out_dir)
    write(out_dir)
    return {**metrics, "row": row} if row else metrics


def model_from_checkpoint(ckpt_dir):
    """(float CPU model, ModelConfig, Tokenizer) from a training checkpoint directory."""
    from nbmf.models import ModelConfig, build_model
    from nbmf.tokenizer import Tokenizer
    from train import checkpoint as ckpt_io

    loaded = ckpt_io.load(ckpt_dir)
    cfg = ModelConfig(**loaded.config["model"])
    model = build_model(cfg)
    model.load_state_dict(loaded.model_state)
    return model.eval(), cfg, Tokenizer.from_json(loaded.tokenizer_json), loaded
