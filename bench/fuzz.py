"""Fuzz the decoder at scale: mutate honest blobs of every codec and format, decode each, classify the outcome.

    python bench/fuzz.py --blobs 1000000 --workers 2 --out bench/results/fuzz.json

Honest blobs: val records (../shared/corpus/val.jsonl, else data/sample/val.jsonl) of at most --max-bytes,
encoded by the current model (lossless and semantic), by its zstd fallback (when its artifact ships a dictionary)
and by the stub, each in format v2 (what encode writes) and, but for the fallback's, v1 (the same body under a v1
header: what older code wrote). Each trial takes one at random and applies one
mutation: 1-3 bit flips, a random byte written, a byte inserted or deleted, a truncation, bytes appended, the
header rewritten with random bytes, or the body swapped for another blob's of the same encoder.

Outcomes per blob: a typed error (NBMFError: counted by class), the exact original payload (damage the codec
ignores, e.g. a deflate stream's padding bits), WRONG (any other payload: must be 0), CRASH (any other exception:
must be 0). A decode that takes more than --slow-ms of CPU time is listed (a hang would show there; none should),
and the largest CPU time per decode is reported (CPU, not wall time: on a busy machine wall time measures the
neighbours). Progress on stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from nbmf import blob as blobfmt
from nbmf.data.corpus import read_corpus
from nbmf.errors import NBMFError
from nbmf.payload import to_raw
from nbmf.registry import Registry, default_model_dir

REPO = Path(__file__).resolve().parents[1]
MUTATIONS = ("flip", "write", "insert", "delete", "truncate", "append", "header", "swap_body")


def _as_v1(blob: bytes) -> bytes:
    h, body = blobfmt.unpack(blob)
    return blobfmt.pack(encoder_id=h.encoder_id, fidelity=h.fidelity, kind=h.kind, original_length=h.original_length,
                        body=body)


def honest_blobs(reg: Registry, path: Path, limit: int, max_bytes: int) -> list[tuple[bytes, object, str]]:
    """(blob, payload, label) for every record of at most max_bytes: neural and stub, lossless and semantic, v2 and v1."""
    payloads = [r["data"] for r in read_corpus(path, limit=limit)]
    payloads = [p for p in payloads if len(json.dumps(p, ensure_ascii=False).encode()) <= max_bytes]
    out = []
    for version in (None, "stub"):
        for fidelity in ("lossless", "semantic"):
            for p, b in zip(payloads, reg.encode_many(payloads, fidelity=fidelity, version=version)):
                expected = reg.decode(b)
                h = blobfmt.peek_header(b)
                name = f"{h.version}:fallback" if h.fallback else h.version
                out.append((b, expected, f"{name}/{fidelity}/v2"))
                if not h.fallback:  # format v1 has no fallback bodies
                    out.append((_as_v1(b), expected, f"{name}/{fidelity}/v1"))
    fb = reg.fallback(reg.current)
    if fb is not None:  # the fallback's blob of every record, whether or not the registry would pick it
        for p in payloads:
            raw, kind = to_raw(p)
            blob = blobfmt.pack_v2(encoder_id=fb.encoder_id, fidelity=blobfmt.Fidelity.LOSSLESS, kind=kind, content=raw,
                                   body=fb.encode_many([(raw, kind)])[0], fingerprint=fb.fingerprint, fallback=True)
            out.append((blob, reg.decode(blob), f"{fb.name}/lossless/v2"))
    return out


def mutate(blob: bytes, rng: np.random.Generator, bodies: dict) -> tuple[bytes, str]:
    kind = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
    b = bytearray(blob)
    n = len(b)
    if kind == "flip":
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(n * 8))
            b[i // 8] ^= 1 << (i % 8)
    elif kind == "write":
        i = int(rng.integers(n))
        b[i] = (b[i] + int(rng.integers(1, 256))) % 256
    elif kind == "insert":
        b.insert(int(rng.integers(n + 1)), int(rng.integers(256)))
    elif kind == "delete":
        del b[int(rng.integers(n))]
    elif kind == "truncate":
        b = b[: int(rng.integers(n))]
    elif kind == "append":
        b += rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    elif kind == "header":
        h = blobfmt.peek_header(blob).header_size
        k = int(rng.integers(1, h + 1))
        b[:k] = rng.integers(0, 256, k, dtype=np.uint8).tobytes()
    else:  # swap_body: a real body of the same codec under this header
        h = blobfmt.peek_header(blob)
        pool = bodies[(h.encoder_id, h.fallback)]
        b = b[: h.header_size] + pool[int(rng.integers(len(pool)))]
    return bytes(b), kind


def _run(args) -> dict:
    seed, trials, limit, max_bytes, slow_ms, corpus, model_dir = args
    os.environ.setdefault("NBMF_THREADS", "1")
    reg = Registry(model_dir)
    honest = honest_blobs(reg, Path(corpus), limit, max_bytes)
    bodies: dict = {}
    for b, _, _ in honest:
        h, body = blobfmt.unpack(b)
        bodies.setdefault((h.encoder_id, h.fallback), []).append(body)
    rng = np.random.default_rng(seed)
    counts: Counter = Counter()
    wrong, crashes, slow = [], [], []
    max_ms = 0.0
    t_start = time.perf_counter()
    for t in range(trials):
        blob, expected, label = honest[int(rng.integers(len(honest)))]
        bad, how = mutate(blob, rng, bodies)
        t0 = time.process_time()
        try:
            got = reg.decode(bad)
            outcome = "exact" if (got == expected and type(got) is type(expected)) else "WRONG"
        except NBMFError as e:
            outcome = type(e).__name__
        except Exception as e:  # noqa: BLE001 - the point is to count what escapes
            outcome = "CRASH"
            crashes.append({"blob": bad.hex(), "label": label, "mutation": how, "error": repr(e)[:300]})
        ms = (time.process_time() - t0) * 1e3
        counts["cpu_ms_total"] += ms
        max_ms = max(max_ms, ms)
        if outcome == "WRONG":
            wrong.append({"blob": bad.hex(), "original": blob.hex(), "label": label, "mutation": how})
        if ms > slow_ms:
            slow.append({"ms": round(ms, 1), "label": label, "mutation": how, "bytes": len(bad)})
        counts[outcome] += 1
        counts[f"{label.split('/')[0]}:{label.split('/')[2]}"] += 1
        counts[f"mutation:{how}"] += 1
        if seed == 0 and (t + 1) % 20000 == 0:
            rate = (t + 1) / (time.perf_counter() - t_start)
            print(f"fuzz: worker 0 {t + 1}/{trials} ({rate:.0f}/s) {dict(counts.most_common(6))}", file=sys.stderr,
                  flush=True)
    return {"counts": counts, "wrong": wrong, "crashes": crashes, "slow": slow, "honest": len(honest), "max_ms": max_ms}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blobs", type=int, default=1_000_000, help="mutated blobs to decode in all")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (one thread each)")
    ap.add_argument("--records", type=int, default=400, help="val records to take honest blobs from")
    ap.add_argument("--max-bytes", type=int, default=400, help="largest record (small records: more trials/s)")
    ap.add_argument("--slow-ms", type=float, default=1000.0, help="list decodes slower than this")
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--model-dir", type=Path, default=None, help="default: nbmf.modeldir.default_model_dir()")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fuzz.json")
    a = ap.parse_args(argv)
    corpus = a.corpus or next(p for p in (REPO.parent / "shared" / "corpus" / "val.jsonl",
                                          REPO / "data" / "sample" / "val.jsonl") if p.exists())
    model_dir = a.model_dir or default_model_dir()
    per = -(-a.blobs // a.workers)
    t0 = time.time()
    jobs = [(w, per, a.records, a.max_bytes, a.slow_ms, str(corpus), str(model_dir)) for w in range(a.workers)]
    with ProcessPoolExecutor(a.workers) as pool:
        parts = list(pool.map(_run, jobs))
    counts: Counter = Counter()
    for p in parts:
        counts.update(p["counts"])
    cpu_ms = counts.pop("cpu_ms_total", 0.0)
    outcomes = {k: v for k, v in counts.items() if ":" not in k}
    summary = {
        "blobs": sum(outcomes.values()), "honest_blobs": parts[0]["honest"], "seconds": round(time.time() - t0, 1),
        "corpus": str(corpus), "model_dir": str(model_dir), "max_record_bytes": a.max_bytes,
        "outcomes": dict(sorted(outcomes.items())),
        "cpu_ms_per_decode": {"mean": round(cpu_ms / max(1, sum(outcomes.values())), 3),
                              "max": round(max(p["max_ms"] for p in parts), 1)},
        "by_source": {k: v for k, v in sorted(counts.items()) if ":" in k and not k.startswith("mutation:")},
        "by_mutation": {k.split(":")[1]: v for k, v in sorted(counts.items()) if k.startswith("mutation:")},
        "wrong": [w for p in parts for w in p["wrong"]][:20], "crashes": [c for p in parts for c in p["crashes"]][:20],
        "slow": sorted((s for p in parts for s in p["slow"]), key=lambda s: -s["ms"])[:20],
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("blobs", "seconds", "outcomes", "cpu_ms_per_decode", "by_source")},
                     indent=1))
    bad = summary["outcomes"].get("WRONG", 0) + summary["outcomes"].get("CRASH", 0)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
