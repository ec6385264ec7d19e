"""Small real model artifacts for tests (imports torch: not part of the decode path).

``tiny_artifact`` trains a tiny model for a few steps on the bundled sample and exports it through
the real export path, so tests exercise exactly what production runs, only smaller.
"""
from __future__ import annotations

import os
from pathlib import Path

from nbmf.codecs.neural import load_codec
from nbmf.data.corpus import iter_records, read_corpus

SAMPLE_TRAIN = Path(__file__).resolve().parents[2] / "data" / "sample" / "train.jsonl"


def sample_records(path: Path = SAMPLE_TRAIN, limit: int | None = None) -> list[dict]:
    """Record objects (payloads in ``data``) of a corpus file (default: the bundled training sample); ``limit`` 0
    or None: all."""
    return read_corpus(path, limit=limit or None)


def sample_items(path: Path = SAMPLE_TRAIN, limit: int | None = None) -> list[tuple]:
    """``(raw, kind)`` codec batch items of a corpus file's records (``nbmf.data.corpus.iter_records``)."""
    return [(r.raw, r.kind) for r in iter_records(path, limit=limit or None)]


def tiny_artifact(out_dir, version: str = "v1", family: str = "transformer", steps: int = 40, seed: int = 0,
                  d_model: int = 32, vocab_size: int = 384, records: int = 600, dict_size: int | None = None) -> Path:
    """Train a tiny ``family`` model for ``steps`` steps (seconds on CPU) and export it to ``out_dir``; with
    ``dict_size``, a fallback dictionary of that many bytes trained on the same records, as production exports
    ship. None (the default): none, as artifacts exported before the fallback existed; a tiny model loses nearly
    every record to a dictionary of its own training data, and the tests of its neural path need it to win some."""
    import numpy as np
    import torch
    from torch.nn import functional as F

    from nbmf.export import export_artifact
    from nbmf.models import ModelConfig, build_model
    from nbmf.models.batching import PAD, make_batches, record_windows
    from nbmf.tokenizer import Tokenizer

    torch.manual_seed(seed)
    raws = sample_items(limit=records)
    tok = Tokenizer.train([raw for raw, _ in raws], vocab_size=vocab_size)
    cfg = ModelConfig(family=family, vocab_size=tok.vocab_size, d_model=d_model, n_layers=2, n_heads=2,
                      mlp_mult=2, kernel_size=3, context=64)
    model = build_model(cfg)
    ids = tok.encode_batch([raw for raw, _ in raws])
    windows = [w for (_, kind), x in zip(raws, ids) for w in record_windows(x, kind, 0, cfg)]
    batches = make_batches(windows, 1024, np.random.default_rng(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(steps):
        model.set_qat(step >= steps // 2)
        batch = batches[step % len(batches)]
        x, y = torch.from_numpy(batch[:, :-1]).clamp_min(0), torch.from_numpy(batch[:, 1:])
        loss = F.cross_entropy(model(x).reshape(-1, cfg.vocab_size), y.reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.set_qat(True)
    from nbmf.dictionary import train

    dictionary = train([raw for raw, _ in raws], dict_size) if dict_size else None
    return export_artifact(model, cfg, tok, out_dir, version=version,
                           metrics={"train_loss_nats": float(loss.detach())}, data_hash="sample",
                           training={"steps": steps, "seed": seed, "family": family}, dictionary=dictionary,
                           dictionary_info={"samples": len(raws)} if dictionary else None)


CROSS_PROCESS = r"""
import json, sys
from nbmf.codecs.neural import load_codec
from nbmf.data.corpus import iter_records
codec = load_codec(sys.argv[1]); mode = sys.argv[2]; batch = int(sys.argv[3]); limit = int(sys.argv[5]) or None
items = [(r.raw, r.kind) for r in iter_records(sys.argv[4], limit=limit)]
if mode == "encode":
    bodies = []
    for i in range(0, len(items), batch):
        bodies += codec.encode_many(items[i:i + batch])
    print(json.dumps([b.hex() for b in bodies]))
else:
    bodies = [bytes.fromhex(h) for h in json.loads(sys.stdin.read())]
    out = []
    for i in range(0, len(items), batch):
        out += codec.decode_many([(b, k, len(r)) for b, (r, k) in zip(bodies[i:i + batch], items[i:i + batch])])
    assert out == [r for r, _ in items], "payload mismatch"
    print("ok", len(out))
"""


def cross_process(artifact, records_file, mode: str, batch: int, threads: int, limit: int = 0, stdin: str | None = None,
                  timeout: float = 1800) -> str:
    """Encode (or decode ``stdin``'s bodies) in a fresh process with its own batch size and thread count."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NBMF_THREADS=str(threads), OMP_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads))
    p = subprocess.run([sys.executable, "-c", CROSS_PROCESS, str(artifact), mode, str(batch), str(records_file), str(limit)],
                       input=stdin, capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"{mode} (batch {batch}, {threads} threads) failed:\n{p.stderr[-3000:]}")
    return p.stdout


def forged_match(src, dest, edit):
    """A copy of artifact ``src`` at ``dest`` whose match.json ``edit`` (bytes -> bytes) rewrites, with the
    manifest's hash made to fit: what a hash cannot defend against, so the contents must be checked at load."""
    import hashlib
    import json
    import shutil
    from pathlib import Path

    from nbmf.artifact import MANIFEST, MATCH

    dest = Path(dest)
    shutil.copytree(src, dest)
    data = edit((dest / MATCH).read_bytes())
    (dest / MATCH).write_bytes(data)
    m = json.loads((dest / MANIFEST).read_text())
    m["files"][MATCH] = "sha256:" + hashlib.sha256(data).hexdigest()
    (dest / MANIFEST).write_text(json.dumps(m))
    return dest


DEVICE = os.environ.get("NBMF_TEST_DEVICE", "cpu")  # the torch device tests' device; on a GPU host: cuda


def assert_device_matches_kernel(codec, items, tokens: int = 300, slots: int = 3, host_threads: int = 0) -> None:
    """The codec's artifact on a torch device (CPU unless $NBMF_TEST_DEVICE: the code a GPU runs), with a small
    token budget (several encode passes) and few decode slots (refills, then narrowing): its bodies are the CPU
    kernel's byte for byte and decode back both ways; damaged bodies (a flipped bit, cut, padded) give the kernel's
    tokens and status per record."""
    import numpy as np

    from nbmf.runtime import layouts

    dev = load_codec(codec.path, device=DEVICE, threads=1)
    dev.runtime.tokens, dev.runtime.slots, dev.runtime.host_threads = tokens, slots, host_threads
    bodies = codec.encode_many(items)
    assert dev.encode_many(items) == bodies
    jobs = [(b, kind, len(raw)) for b, (raw, kind) in zip(bodies, items)]
    raws = [raw for raw, _ in items]
    assert dev.decode_many(jobs) == raws and codec.decode_many(jobs) == raws
    rng = np.random.default_rng(1)
    damaged = []
    for k, body in enumerate(bodies):
        b = bytearray(body)
        if k % 3 == 0 and b:
            b[rng.integers(len(b))] ^= 1 << int(rng.integers(8))
        elif k % 3 == 1:
            b = b[: len(b) // 2]
        else:
            b += bytes(rng.integers(0, 256, 9, dtype=np.uint8))
        damaged.append(layouts.words_of_body(bytes(b), codec.model.body_layout))
    first = np.array([codec.cfg.special_token(int(kind), 0) for _, kind in items])
    lengths = np.array([len(raw) + 5 for raw in raws])
    want_tokens, want_status = codec.model.decode(first, damaged, lengths, codec._piece_len)
    got_tokens, got_status = dev.runtime.decode(first, damaged, lengths, codec._piece_len)
    assert np.array_equal(got_status, want_status) and (want_status != 0).sum() >= len(items) // 3
    assert all(np.array_equal(a, b) for a, b in zip(got_tokens, want_tokens))
