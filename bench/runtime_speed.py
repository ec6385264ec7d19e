"""Runtime speed of a neural artifact, against a baseline checkout measured in the same run on the same records.

    git worktree add /tmp/base 628ba02
    python bench/runtime_speed.py models/v1 --baseline /tmp/base --out bench/results/runtime_v1

Each code tree runs in its own process (PYTHONPATH=<tree>) on the same evenly spaced val records, warmed up
first (numba compiles on first use), and reports records/s for: encode one record per call, decode at
batch 1, decode in lockstep batches of 32 (single thread), encode/decode with every core
(``--threads``; trees without per-codec threads run these single-threaded), and bulk decode: all the records
in one call, on one thread and on every core. Every timed run checks its
bytes: decode must give back every record, and both trees must write identical bodies. Figures are
ratios against the baseline of this same run; absolute times on a shared machine are noisy.
``--profile`` adds where the time goes per token in this tree's kernel (timed inside compiled code).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = r"""
import hashlib, json, sys, time
from pathlib import Path
import numpy as np
from nbmf.codecs.neural import load_codec
from nbmf.models.batching import corpus_raw

artifact, val, n_records, threads, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
lines = Path(val).read_text(encoding="utf-8").splitlines()
pick = np.linspace(0, len(lines) - 1, min(n_records, len(lines))).astype(int)
items = [corpus_raw(json.loads(lines[i])) for i in pick]
codec = load_codec(artifact)
has_threads = hasattr(codec, "threads")

def set_threads(n):
    if has_threads:
        codec.threads = n

def best_of(fn):
    best = None
    for _ in range(repeats):
        t = time.perf_counter(); out = fn(); dt = time.perf_counter() - t
        best = dt if best is None or dt < best else best
    return best, out

def encode_each():
    return [codec.encode_many([it])[0] for it in items]

def encode_batched():
    out = []
    for i in range(0, len(items), 32):
        out += codec.encode_many(items[i:i + 32])
    return out

def decode(batch):
    def run():
        out = []
        for i in range(0, len(jobs), batch):
            out += codec.decode_many(jobs[i:i + batch])
        return out
    return run

set_threads(1)
bodies = codec.encode_many(items)  # warm-up: compiles every kernel
jobs = [(b, k, len(r)) for b, (r, k) in zip(bodies, items)]
codec.decode_many(jobs[:2]); codec.decode_many(jobs[:1])
want = [r for r, _ in items]
res = {"records": len(items), "raw_bytes": sum(len(r) for r in want), "threads_supported": has_threads,
       "tokens": int(sum(len(codec.tokenizer.encode(r)) for r in want)),
       "bodies_sha256": hashlib.sha256(b"".join(b + b"|" for b in bodies)).hexdigest()}
for name, fn in [("encode_1", encode_each), ("decode_b1", decode(1)), ("decode_b32", decode(32))]:
    dt, out = best_of(fn)
    assert out == (bodies if name.startswith("encode") else want), name + ": wrong bytes"
    res[name] = len(items) / dt
set_threads(threads)
for name, fn in [("encode_b32_threads", encode_batched), ("decode_b32_threads", decode(32)),
                 ("decode_all_threads", decode(len(jobs)))]:
    dt, out = best_of(fn)
    assert out == (bodies if name.startswith("encode") else want), name + ": wrong bytes"
    res[name] = len(items) / dt
set_threads(1)
dt, out = best_of(encode_batched)
assert out == bodies
res["encode_b32"] = len(items) / dt
dt, out = best_of(decode(len(jobs)))
assert out == want
res["decode_all"] = len(items) / dt
print(json.dumps(res))
"""

PROFILE = r"""
import json, sys, time
import numpy as np
from numba import njit
from nbmf.artifact import load_artifact
from nbmf.runtime import coder, kernels
from nbmf.runtime.gemm import gemm

_, cfg, im, _ = load_artifact(sys.argv[1])
P = im.kernel_params

@njit(nogil=True)
def t_forward(P, st, toks, slots, n, wk, reps):
    for _ in range(reps):
        st.pos[:] = 1000  # a full attention window
        kernels.forward(P, st, toks, slots, n, wk)

@njit(nogil=True)
def t_attend(P, st, wk, n, reps):
    a = P.attn
    slots, rowpos = np.arange(n), np.full(n, 1000, np.int64)  # n records, each with a full attention window
    for _ in range(reps):
        kernels._attention(a.qkv.m[0], a.qkv.s[0], a.score_m[0], a.score_s[0], a.slopes[0], a.lut, st.kp[0],
                           st.kb[0], st.vp[0], slots, rowpos, n, wk.acc, wk.x, wk)

@njit(nogil=True)
def t_gemms(P, wk, n, reps):
    for _ in range(reps):
        for layer in range(P.mixer_type.shape[0]):
            gemm(wk.x, n, P.attn.qkv.w[0], P.attn.qkv.bias[0], wk.acc)
            gemm(wk.x, n, P.out.w[layer], P.out.bias[layer], wk.acc)
            gemm(wk.x, n, P.up.w[layer], P.up.bias[layer], wk.acc)
            gemm(wk.x, n, P.down.w[layer], P.down.bias[layer], wk.acc)
        gemm(wk.x, n, P.head.w[0], P.head.bias[0], wk.acc)

@njit(nogil=True)
def t_table(P, wk, reps):
    for _ in range(reps):
        kernels.table(P.head.m[0], P.head.s[0], P.head_lut, wk.acc, 0, wk.freq, wk.blocks)

@njit(nogil=True)
def t_search(wk, reps):
    scale = coder.quant_scale(wk.blocks.sum(), wk.freq.shape[0])
    s = 0
    for k in range(reps):
        s += coder.find_symbol(wk.freq, wk.blocks, kernels.BLOCK, (k * 7919) % (1 << 24), scale)[0]
    return s

def per(fn, reps, rows):
    fn(1); t = time.perf_counter(); fn(reps)
    return (time.perf_counter() - t) / reps / rows * 1e6

n_attn = sum(1 for m in cfg.mixers() if m == "attention")
out = {}
for n in (1, 32):
    wk = im.new_work(n); st = im.new_state(n)
    wk.r[:] = np.random.default_rng(0).integers(-3000, 3000, wk.r.shape)
    wk.x[:] = np.random.default_rng(1).integers(1, 256, wk.x.shape)
    toks, slots = np.arange(n), np.arange(n)
    forward = per(lambda r: t_forward(P, st, toks, slots, n, wk, r), 400, n)
    gemms = per(lambda r: t_gemms(P, wk, n, r), 400, n)
    attend = n_attn * per(lambda r: t_attend(P, st, wk, n, r), 4000 // n, n)
    table = per(lambda r: t_table(P, wk, r), 4000, 1)
    search = per(lambda r: t_search(wk, r), 20000, 1)
    out[f"rows={n}"] = {"int8 products (all layers + head)": gemms, "attention (softmax, cache, 2 small products)": attend,
                        "norms, requant, LUTs, residual": forward - gemms - attend, "head -> frequency table": table,
                        "coder (table search + range decoder)": search, "total per token": forward + table + search}
wk = im.new_work(512)
wk.x[:] = 129
head = P.head
t = per(lambda r: t_gemms(P, wk, 512, r), 20, 1) / 512
macs = sum(w.size for w in (im.params["wo"], im.params["w1"], im.params["w2"], im.params["qkv"], im.params["zc"], im.params["wh"]))
out["weight MACs per token"] = int(macs)
out["int8 products at 512 rows, GMAC/s"] = macs / (t * 1e-6) / 1e9
print(json.dumps(out))
"""


def run(tree: Path, code: str, args: list[str], threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", NBMF_THREADS="1")
    p = subprocess.run([sys.executable, "-c", code, *args], cwd=tree, env=env, capture_output=True, text=True,
                       timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"measurement in {tree} failed:\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def plot(rows: list[tuple[str, float, float]], path: Path, names: tuple[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 1.2 + 0.45 * len(rows)))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], [r[1] for r in rows], height=0.4, label=names[0], color="#999")
    ax.barh([i - 0.2 for i in y], [r[2] for r in rows], height=0.4, label=names[1], color="#2a6")
    for i, (_, b, n) in enumerate(rows):
        ax.text(n, i - 0.2, f" {n / b:.1f}x", va="center", fontsize=8)
    ax.set_yticks(list(y), [r[0] for r in rows])
    ax.set_xscale("log")
    ax.set_xlabel("records/s (log scale)")
    ax.invert_yaxis()
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title("neural codec throughput, same records, same run")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", type=Path, help="model artifact directory, e.g. models/v1")
    p.add_argument("--baseline", type=Path, required=True, help="checkout of the code to compare with")
    p.add_argument("--val", type=Path, default=REPO.parent / "shared" / "corpus" / "val.jsonl")
    p.add_argument("--records", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per figure; the best counts")
    p.add_argument("--profile", action="store_true", help="add this tree's time per token by kernel part")
    p.add_argument("--out", type=Path, help="write <out>.json and <out>.png")
    a = p.parse_args(argv)
    args = [str(a.artifact.resolve()), str(a.val.resolve()), str(a.records), str(a.threads), str(a.repeats)]
    print(f"baseline {a.baseline} ...", file=sys.stderr)
    base = run(a.baseline.resolve(), WORKER, args, a.threads)
    print(f"this tree {REPO} ...", file=sys.stderr)
    new = run(REPO, WORKER, args, a.threads)
    if base["bodies_sha256"] != new["bodies_sha256"]:
        raise SystemExit("the two trees wrote different bodies: the runtime is not exact")
    rows = [("encode, one record per call", base["encode_1"], new["encode_1"]),
            ("encode, 32 records per call", base["encode_b32"], new["encode_b32"]),
            ("decode, batch 1", base["decode_b1"], new["decode_b1"]),
            ("decode, lockstep batch 32", base["decode_b32"], new["decode_b32"]),
            (f"encode, 32 per call, {a.threads} threads", base["encode_b32_threads"], new["encode_b32_threads"]),
            (f"decode, batch 32, {a.threads} threads", base["decode_b32_threads"], new["decode_b32_threads"]),
            (f"decode, {new['records']} records per call", base["decode_all"], new["decode_all"]),
            (f"decode, {new['records']} per call, {a.threads} threads", base["decode_all_threads"],
             new["decode_all_threads"])]
    report = {"records": new["records"], "raw_bytes": new["raw_bytes"], "tokens": new["tokens"],
              "bodies_identical": True, "baseline": str(a.baseline), "threads": a.threads,
              "rows": [{"what": w, "baseline_records_s": b, "records_s": n, "ratio": n / b} for w, b, n in rows],
              "decode_b32_vs_baseline_b1": new["decode_b32"] / base["decode_b1"],
              "thread_scaling_encode": new["encode_b32_threads"] / new["encode_b32"],
              "thread_scaling_decode": new["decode_b32_threads"] / new["decode_b32"],
              "thread_scaling_decode_bulk": new["decode_all_threads"] / new["decode_all"]}
    print(f"{new['records']} val records, {new['raw_bytes']:,} raw bytes, {new['tokens']:,} tokens; bodies identical")
    print(f"{'':44s} {'baseline':>10s} {'this tree':>10s} {'ratio':>7s}")
    for w, b, n in rows:
        print(f"{w:44s} {b:10.1f} {n:10.1f} {n / b:6.2f}x")
    print(f"decode lockstep 32 vs baseline batch 1: {report['decode_b32_vs_baseline_b1']:.2f}x; "
          f"{a.threads} threads vs 1: encode {report['thread_scaling_encode']:.2f}x, "
          f"decode {report['thread_scaling_decode']:.2f}x (all records in one call: "
          f"{report['thread_scaling_decode_bulk']:.2f}x)")
    if a.profile:
        prof = run(REPO, PROFILE, [str(a.artifact.resolve())], 1)
        report["profile_us_per_token"] = prof
        for k, v in prof.items():
            if isinstance(v, dict):
                print(k + ": " + ", ".join(f"{part} {us:.2f} us" for part, us in v.items()))
            else:
                print(f"{k}: {v:,.1f}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        plot(rows, a.out.with_suffix(".png"), (f"baseline ({a.baseline.name})", "this tree"))
        print(f"wrote {a.out.with_suffix('.json')} and {a.out.with_suffix('.png')}", file=sys.stderr)


if __name__ == "__main__":
    main()
