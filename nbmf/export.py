"""Float (QAT-trained) torch model -> integer runtime parameters -> codec artifact; and a released artifact +
a fitted match model (nbmf.runtime.match) -> a new registered version.

Scales come from the model's own QAT observers (``ActQuant.amax``), so the integers reproduce what
training saw. Imports torch: used by training/export only, never by decoding.

    python -m nbmf.export match models/v1 --train ../shared/corpus/train.jsonl --models models

fits the match model's hit table on training records with v1's own tables and registers v1's weights, tokenizer
and dictionary with it as the next version (not made current: that is a decision made on measurements).

    python -m nbmf.export temperature models/v2 --models models --eta 10 --min 8 --max 20

registers v2's weights, tokenizer, dictionary and match model with an online per-record temperature (the match
model's "temperature": nbmf.runtime.match) as the next version, reporting the bytes it saves on --check records.
"""
from __future__ import annotations

import argparse
import copy
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from nbmf.models.config import ATTN_LOGIT_UNITS, GATE_UNITS, ModelConfig
from nbmf.models.quant import NORM_SCALE, QMAX

RESIDUAL_SCALE = 2.0**-10  # residual stream: int64 in units of 1/1024 (fine enough to be lossless in practice)
HEAD_UNITS = 64  # logits become integers in 1/64 nat
HEAD_LUT_ONE = 1 << 20  # frequency of the most likely token; every token keeps at least 1
HEAD_LUT_NATS = 24
ATTN_LUT_ONE = 1 << 15
ATTN_LUT_NATS = 12


def multiplier(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point (M, s) with M in [2**30, 2**31) so that x * real ~= (x * M + 2**(s-1)) >> s."""
    shape = np.shape(real)
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    if np.any(real <= 0):
        raise ValueError("requantization multipliers must be positive")
    exp = np.floor(np.log2(real)).astype(np.int64)
    shift = 30 - exp
    m = np.round(real * np.exp2(shift.astype(np.float64))).astype(np.int64)
    over = m >= (1 << 31)
    m[over] //= 2
    shift[over] -= 1
    if np.any(shift < 1) or np.any(shift > 62):
        raise ValueError("requantization multiplier out of range")
    return m.reshape(shape), shift.reshape(shape)


def quantize_rows(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row (output channel): (int8 weights, float scales)."""
    w = w.detach().double().numpy()
    scale = np.maximum(np.abs(w).max(axis=1), 1e-8) / QMAX
    return np.clip(np.round(w / scale[:, None]), -QMAX, QMAX).astype(np.int8), scale


def _lut(fn, scale_in: float, scale_out: float) -> np.ndarray:
    x = torch.arange(-127, 128, dtype=torch.float64) * scale_in
    return np.clip(np.round(fn(x).numpy() / scale_out), -QMAX, QMAX).astype(np.int64)


def integer_params(model) -> dict[str, np.ndarray]:
    """The integer runtime's parameter arrays for a trained ``CausalModel``."""
    cfg: ModelConfig = model.cfg
    d = cfg.d_model
    p: dict[str, list | np.ndarray] = {k: [] for k in (
        "wo", "wo_m", "wo_s", "w1", "w1_m", "w1_s", "act_lut", "w2", "w2_m", "w2_s",
        "qkv", "qkv_m", "qkv_s", "score_m", "score_s", "slopes",
        "taps", "taps_m", "taps_s", "dilation", "conv_lut", "zc", "zc_m", "zc_s", "sig_lut")}
    mixer_type, mixer_idx, counts = [], [], {"attention": 0, "conv": 0, "recurrent": 0}

    def linear(layer, s_in: float, s_out: np.ndarray | float, name: str):
        w, s_w = quantize_rows(layer.folded_weight())
        m, s = multiplier(s_in * s_w / s_out)
        p[name].append(w)
        p[name + "_m"].append(m)
        p[name + "_s"].append(s)

    def scale_of(q) -> float:
        if float(q.amax) <= 0:
            raise ValueError("an activation was never observed: train (or calibrate) before export")
        return float(q.amax) / QMAX

    for layer, (block, kind) in enumerate(zip(model.blocks, cfg.mixers())):
        mx = block.mixer
        mixer_type.append({"attention": 0, "conv": 1, "recurrent": 2}[kind])
        mixer_idx.append(counts[kind])
        counts[kind] += 1
        if kind == "attention":
            s_q, s_k, s_v = scale_of(mx.q_quant), scale_of(mx.k_quant), scale_of(mx.v_quant)
            linear(mx.qkv, NORM_SCALE, np.repeat([s_q, s_k, s_v], d), "qkv")
            m, s = multiplier(s_q * s_k / math.sqrt(mx.d_head) * ATTN_LOGIT_UNITS)
            p["score_m"].append(m)
            p["score_s"].append(s)
            p["slopes"].append(np.round(mx.slopes.double().numpy() * ATTN_LOGIT_UNITS).astype(np.int64))
            s_y = s_v
        elif kind == "conv":
            taps, s_t = quantize_rows(mx.taps.t())  # per channel across taps
            s_c, s_a = scale_of(mx.conv_quant), scale_of(mx.act_quant)
            m, s = multiplier(NORM_SCALE * s_t / s_c)
            p["taps"].append(taps.T.copy())
            p["taps_m"].append(m)
            p["taps_s"].append(s)
            p["dilation"].append(cfg.dilation(layer))
            p["conv_lut"].append(_lut(F.gelu, s_c, s_a))
            s_y = s_a
        else:
            s_z, s_c = scale_of(mx.z_quant), scale_of(mx.c_quant)
            linear(mx.zc, NORM_SCALE, np.repeat([s_z, s_c], d), "zc")
            x = torch.arange(-127, 128, dtype=torch.float64) * s_z
            p["sig_lut"].append(np.round(torch.sigmoid(x).numpy() * GATE_UNITS).astype(np.int64))
            s_y = s_c
        linear(mx.out, s_y, RESIDUAL_SCALE, "wo")
        mlp = block.mlp
        s_pre, s_act = scale_of(mlp.pre_quant), scale_of(mlp.act_quant)
        linear(mlp.up, NORM_SCALE, s_pre, "w1")
        p["act_lut"].append(_lut(F.gelu, s_pre, s_act))
        linear(mlp.down, s_act, RESIDUAL_SCALE, "w2")

    def stack(name, shape, dtype):
        return np.stack(p[name]).astype(dtype) if p[name] else np.zeros(shape, dtype)

    h = cfg.mlp_mult * d
    out = {
        "emb": np.round(model.embed.weight.detach().double().numpy() / RESIDUAL_SCALE).astype(np.int64),
        "norm_k": np.array(round(math.sqrt(d) / NORM_SCALE * 256), dtype=np.int64),
        "mixer_type": np.array(mixer_type, np.int64),
        "mixer_idx": np.array(mixer_idx, np.int64),
        "wo": stack("wo", (0, d, d), np.int8), "wo_m": stack("wo_m", (0, d), np.int64),
        "wo_s": stack("wo_s", (0, d), np.int64),
        "w1": stack("w1", (0, h, d), np.int8), "w1_m": stack("w1_m", (0, h), np.int64),
        "w1_s": stack("w1_s", (0, h), np.int64),
        "act_lut": stack("act_lut", (0, 255), np.int64),
        "w2": stack("w2", (0, d, h), np.int8), "w2_m": stack("w2_m", (0, d), np.int64),
        "w2_s": stack("w2_s", (0, d), np.int64),
        "qkv": stack("qkv", (0, 3 * d, d), np.int8), "qkv_m": stack("qkv_m", (0, 3 * d), np.int64),
        "qkv_s": stack("qkv_s", (0, 3 * d), np.int64),
        "score_m": stack("score_m", (0,), np.int64), "score_s": stack("score_s", (0,), np.int64),
        "slopes": stack("slopes", (0, cfg.n_heads), np.int64),
        "attn_lut": np.round(ATTN_LUT_ONE * np.exp(-np.arange(ATTN_LUT_NATS * ATTN_LOGIT_UNITS) / ATTN_LOGIT_UNITS))
        .astype(np.int64),
        "taps": stack("taps", (0, cfg.kernel_size, d), np.int8), "taps_m": stack("taps_m", (0, d), np.int64),
        "taps_s": stack("taps_s", (0, d), np.int64), "dilation": stack("dilation", (0,), np.int64),
        "conv_lut": stack("conv_lut", (0, 255), np.int64),
        "zc": stack("zc", (0, 2 * d, d), np.int8), "zc_m": stack("zc_m", (0, 2 * d), np.int64),
        "zc_s": stack("zc_s", (0, 2 * d), np.int64), "sig_lut": stack("sig_lut", (0, 255), np.int64),
    }
    wh, s_h = quantize_rows(model.head.folded_weight())
    out["wh"] = wh
    out["wh_m"], out["wh_s"] = multiplier(NORM_SCALE * s_h * HEAD_UNITS)
    lut = np.round(HEAD_LUT_ONE * np.exp(-np.arange(HEAD_LUT_NATS * HEAD_UNITS) / HEAD_UNITS))
    out["head_lut"] = np.maximum(lut, 1).astype(np.int64)
    return out


def export_artifact(model, cfg: ModelConfig, tokenizer, out_dir: str | Path, version: str,
                    metrics: dict | None = None, data_hash: str = "", training: dict | None = None,
                    dictionary: bytes | None = None, dictionary_info: dict | None = None) -> Path:
    """Write an int8 integer-runtime artifact directory (weights, tokenizer, manifest with sha256s) and, given
    ``dictionary`` (nbmf.dictionary, trained on the model's training records), its classical fallback's zstd
    dictionary (``dictionary_info``: how it was trained, recorded in the manifest)."""
    from nbmf.artifact import write_artifact
    from nbmf.runtime.intmodel import IntModel

    model = model.eval()
    int_model = IntModel(cfg, integer_params(model))
    return write_artifact(out_dir, version=version, cfg=cfg, int_model=int_model, tokenizer=tokenizer,
                          metrics=metrics or {}, data_hash=data_hash, training=training or {},
                          dictionary=dictionary, dictionary_info=dictionary_info)


# -- a match model on a released artifact ------------------------------------------------------------------------
def match_events(codec, items, k: int, table_bits: int, max_len: int) -> dict:
    """``IntModel.match_events`` of match model (k, table_bits, max_len) over [(raw, kind), ...] (lossless)."""
    from nbmf.runtime import match

    m = match.make(k, table_bits, max_len, np.zeros((match.LEN_BUCKETS, match.PROB_BUCKETS), np.int64))
    ids = codec.tokenizer.encode_batch([raw for raw, _ in items])
    keep = [i for i, x in enumerate(ids) if len(x)]
    return codec.model.match_events([codec.sequence(ids[i], items[i][1], 0)[:-1] for i in keep],
                                    [ids[i] for i in keep], m)


def fit_match(codec, items, ks=(1, 2, 3, 4), table_bits: int = 12, max_len: int = 255, held_out: float = 0.25):
    """(match model, about): the hit table fitted on ``items`` (training records) with the codec's own neural
    tables, for the k in ``ks`` that saves the most bits on the last ``held_out`` share of the items when fitted on
    the rest; the final table is fitted on all of them."""
    from nbmf.runtime import match

    cut = int(len(items) * (1 - held_out))
    trials = {}
    for k in ks:
        table, _ = match.fit_table(match_events(codec, items[:cut], k, table_bits, max_len))
        trials[k] = match.bits_saved(table, match_events(codec, items[cut:], k, table_bits, max_len))
        print(f"k={k}: {trials[k] / 8:,.0f} bytes saved on {len(items) - cut} held-out records", flush=True)
    k = max(trials, key=trials.get)
    table, stats = match.fit_table(match_events(codec, items, k, table_bits, max_len))
    about = {"k": k, "table_bits": table_bits, "max_len": max_len, "fit_records": len(items), **stats,
             "held_out_bytes_saved": {str(kk): round(v / 8) for kk, v in trials.items()}}
    return match.make(k, table_bits, max_len, table), about


def register_match_version(base, models_dir, m, about: dict, command: str) -> Path:
    """Register ``base``'s weights, tokenizer and dictionary with match model ``m`` (in place of base's own, if it
    ships one) as the next version of ``models_dir`` (nbmf.modeldir; CURRENT unchanged). Returns its directory."""
    from nbmf.artifact import attach_match, relabel
    from nbmf.modeldir import locked, next_version, register
    from nbmf.runtime import match

    with locked(models_dir), tempfile.TemporaryDirectory() as tmp:
        version = next_version(models_dir)
        art = relabel(base, Path(tmp) / version, version)
        attach_match(art, match.to_json(m), {**about, "base": Path(base).name}, command=command, replace=True)
        return register(art, models_dir, version, make_current=False)


def register_temperature(base, models_dir, eta: int, q_min: int, q_max: int, check: list[Path], command: str) -> Path:
    """Register ``base`` with its match model given an online temperature (``match.with_temperature``) as the
    next version; ``check`` files: every record's neural body under base and under the new tables (decoded back
    and compared), bytes per file recorded in the manifest."""
    from nbmf.artifact import read_manifest, read_match
    from nbmf.codecs.neural import load_codec
    from nbmf.data.corpus import iter_records
    from nbmf.runtime import match
    from nbmf.runtime.intmodel import IntModel

    manifest = read_manifest(base)
    m = read_match(base, manifest)
    if m is None:
        raise SystemExit(f"{base} ships no match model; fit one first (python -m nbmf.export match)")
    m = match.with_temperature(m, eta, q_min, q_max)
    before = load_codec(base, threads=1)
    after = copy.copy(before)  # the same tokenizer and fallback; only the tables' integer model differs
    after.runtime = after.model = IntModel(before.cfg, before.model.params, match=m)
    checked = {}
    for path in check:
        items = [(r.raw, r.kind) for r in iter_records(path)]
        sizes = []
        for codec in (before, after):
            bodies = codec.encode_many(items)
            back = codec.decode_many([(b, k, len(raw)) for (raw, k), b in zip(items, bodies) if b is not None])
            if back != [raw for (raw, _), b in zip(items, bodies) if b is not None]:
                raise SystemExit(f"a body of {path} did not decode back: nothing registered")
            sizes.append(sum(len(b) for b in bodies if b is not None))
        checked[str(path)] = {"records": len(items), "body_bytes_base": sizes[0], "body_bytes": sizes[1],
                              "change": round(sizes[1] / sizes[0] - 1, 4)}
        print(f"{path}: {len(items)} records, bodies {sizes[0]:,} -> {sizes[1]:,} bytes "
              f"({sizes[1] / sizes[0] - 1:+.2%})", flush=True)
    about = {**manifest.get("match", {}), "temperature": {"eta": eta, "min": q_min, "max": q_max},
             "checked": checked}
    about.pop("file", None)
    dest = register_match_version(base, models_dir, m, about, command)
    print(f"registered {dest} (temperature eta={eta}, tau in [{q_min}/16, {q_max}/16]); CURRENT unchanged")
    return dest


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m nbmf.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    mp = sub.add_parser("match", help="fit a match model on a released artifact and register it as a new version")
    mp.add_argument("base", type=Path, help="the artifact whose weights, tokenizer and dictionary the version reuses")
    mp.add_argument("--train", required=True, help="training records (corpus JSONL): the base model's own")
    mp.add_argument("--models", type=Path, required=True, help="model directory to register the version in")
    mp.add_argument("--records", type=int, default=4000, help="training records fitted on (evenly spaced)")
    mp.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 4], help="hashed context lengths tried")
    mp.add_argument("--table-bits", type=int, default=12, help="per-record hash table: 2**bits positions")
    mp.add_argument("--max-len", type=int, default=255, help="longest match length counted")
    mp.add_argument("--temperature", type=int, nargs=3, metavar=("ETA", "MIN", "MAX"),
                    help="and give it an online temperature (as the temperature command's --eta --min --max)")
    tp = sub.add_parser("temperature", help="add an online per-record temperature to an artifact's match model "
                        "and register it as a new version")
    tp.add_argument("base", type=Path, help="an artifact that ships a match model (its weights, tokenizer, "
                    "dictionary and hit table are reused)")
    tp.add_argument("--models", type=Path, required=True, help="model directory to register the version in")
    tp.add_argument("--eta", type=int, default=10, help="theta steps per 1/64 nat of gradient (2**16 = tau 1)")
    tp.add_argument("--min", type=int, default=8, help="lowest tau, in 16ths")
    tp.add_argument("--max", type=int, default=20, help="highest tau, in 16ths")
    tp.add_argument("--check", nargs="*", default=[], help="corpus JSONL files: bodies with and without, per file")
    a = p.parse_args(argv)
    from nbmf.codecs.neural import load_codec
    from nbmf.data.corpus import iter_records

    command = "python -m nbmf.export " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    if a.cmd == "temperature":
        register_temperature(a.base, a.models, a.eta, a.min, a.max, [Path(x) for x in a.check], command)
        return
    codec = load_codec(a.base, threads=1)
    records = list(iter_records(a.train))
    pick = np.linspace(0, len(records) - 1, min(a.records, len(records))).astype(int)
    items = [(records[i].raw, records[i].kind) for i in pick]
    t = time.perf_counter()
    m, about = fit_match(codec, items, tuple(a.k), a.table_bits, a.max_len)
    about["fit_seconds"] = round(time.perf_counter() - t)
    if a.temperature:
        from nbmf.runtime import match

        m = match.with_temperature(m, *a.temperature)
        about["temperature"] = dict(zip(("eta", "min", "max"), a.temperature))
    dest = register_match_version(a.base, a.models, m, about, command)
    print(f"registered {dest} (k={about['k']}, {about['events']:,} predictions, {about['hits']:,} hits); "
          "CURRENT unchanged")


if __name__ == "__main__":
    main()
