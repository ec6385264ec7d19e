"""Small real model artifacts for tests and demos (imports torch: not part of the decode path).

``tiny_artifact`` trains a tiny model for a few steps on the bundled sample and exports it through
the real export path, so tests exercise exactly what production runs, only smaller.
"""
from __future__ import annotations

import json
from pathlib import Path

SAMPLE_TRAIN = Path(__file__).resolve().parents[1] / "data" / "sample" / "train.jsonl"


def sample_records(path: Path = SAMPLE_TRAIN, limit: int | None = None) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if limit and len(out) >= limit:
                break
    return out


def tiny_artifact(out_dir, version: str = "v1", family: str = "transformer", steps: int = 40, seed: int = 0,
                  d_model: int = 32, vocab_size: int = 384, records: int = 600) -> Path:
    """Train a tiny ``family`` model for ``steps`` steps (seconds on CPU) and export it to ``out_dir``."""
    import numpy as np
    import torch
    from torch.nn import functional as F

    from nbmf.export import export_artifact
    from nbmf.models import ModelConfig, build_model
    from nbmf.models.batching import PAD, corpus_raw, make_batches, record_windows
    from nbmf.tokenizer import Tokenizer

    torch.manual_seed(seed)
    raws = [corpus_raw(r) for r in sample_records(limit=records)]
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
    return export_artifact(model, cfg, tok, out_dir, version=version,
                           metrics={"train_loss_nats": float(loss.detach())}, data_hash="sample",
                           training={"steps": steps, "seed": seed, "family": family})
