"""Single-process, resumable training of a codec model (no Ray): the released default model's trainer.

It trains in resumable steps (a checkpoint every few minutes; rerun the same command to continue), so
a long CPU run survives session ends. Ray Train (``python -m train``) runs the same model and batching
on many workers; this is the path for one machine without a cluster.

    python -m train.standalone --out runs/release --minutes 60           # trains or resumes
    python -m train.standalone --out runs/release --export models/v1 --decode-window 128   # int8 artifact
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from nbmf.artifact import sha256_file
from nbmf.data.corpus import iter_records
from nbmf.models import ModelConfig, build_model
from nbmf.models.batching import LOSSLESS, PAD, SEMANTIC, make_batches, record_windows
from nbmf.payload import canonical
from nbmf.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    train_file: str = "../shared/corpus/train.jsonl"
    val_file: str = "../shared/corpus/val.jsonl"
    val_records: int = 400  # val records scored for bits/byte during training
    semantic_share: float = 0.1  # share of records also trained in their semantic (canonical) form
    tokens_per_batch: int = 8192
    lr: float = 2e-3  # peak; cosine to lr_min over total_steps
    lr_min: float = 2e-4
    warmup: int = 200  # steps
    total_steps: int = 6000  # schedule length (the run may stop earlier and resume later)
    qat_from: float = 0.85  # share of total_steps after which int8 fake quantization is on
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_minutes: float = 4.0


def file_sha256(path: str) -> str:
    return sha256_file(Path(path))


def prepare(out: Path, tcfg: TrainConfig, mcfg: ModelConfig):
    """Tokenizer (trained once, saved) and the token windows of train and val (cached as .npz)."""
    train = list(iter_records(tcfg.train_file))
    if (out / "tokenizer.json").exists():
        tok = Tokenizer.load(out)
    else:
        t = time.time()
        tok = Tokenizer.train((r.raw for r in train), vocab_size=mcfg.vocab_size)
        tok.save(out)
        print(f"tokenizer: {tok.vocab_size} ids trained in {time.time() - t:.0f}s", flush=True)
    rng = np.random.default_rng(tcfg.seed)
    samples = [(r.raw, r.kind, LOSSLESS) for r in train]
    for i in np.flatnonzero(rng.random(len(train)) < tcfg.semantic_share):
        samples.append((canonical(train[i].raw, train[i].kind), train[i].kind, SEMANTIC))
    ids = tok.encode_batch([s[0] for s in samples])
    windows = [w for (_, kind, fid), x in zip(samples, ids) for w in record_windows(x, kind, fid, mcfg)]
    n_tokens = sum(len(x) for x in ids)
    n_bytes = sum(len(s[0]) for s in samples)
    print(f"train: {len(samples)} records, {n_bytes / 1e6:.1f} MB, {n_tokens / 1e6:.2f} M tokens "
          f"({n_bytes / n_tokens:.2f} bytes/token), {len(windows)} windows", flush=True)
    val = list(iter_records(tcfg.val_file))
    vrng = np.random.default_rng(1)
    val = [val[i] for i in sorted(vrng.choice(len(val), min(tcfg.val_records, len(val)), replace=False))]
    val_ids = tok.encode_batch([r.raw for r in val])
    val_windows = [w for r, x in zip(val, val_ids) for w in record_windows(x, r.kind, LOSSLESS, mcfg)]
    val_bytes = sum(len(r.raw) for r in val)
    return tok, windows, val_windows, val_bytes


def lr_at(step: int, t: TrainConfig) -> float:
    if step < t.warmup:
        return t.lr * (step + 1) / t.warmup
    p = min(1.0, (step - t.warmup) / max(1, t.total_steps - t.warmup))
    return t.lr_min + 0.5 * (t.lr - t.lr_min) * (1 + math.cos(math.pi * p))


def batch_loss(model, batch: np.ndarray) -> tuple[torch.Tensor, int]:
    """Mean next-token cross entropy (nats) over real targets, and their count."""
    x = torch.from_numpy(batch[:, :-1]).clamp_min(0)
    y = torch.from_numpy(batch[:, 1:])
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=PAD)
    return loss, int((y != PAD).sum())


@torch.no_grad()
def val_bits_per_byte(model, val_windows, val_bytes: int, tokens_per_batch: int) -> float:
    model.eval()
    nats = 0.0
    for batch in make_batches(val_windows, tokens_per_batch, np.random.default_rng(0)):
        loss, n = batch_loss(model, batch)
        nats += float(loss) * n
    model.train()
    return nats / math.log(2) / val_bytes


def save_checkpoint(path: Path, model, opt, step: int, epoch: int, mcfg, tcfg, history):
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "epoch": epoch,
                "model_config": dataclasses.asdict(mcfg), "train_config": dataclasses.asdict(tcfg),
                "history": history}, tmp)
    tmp.replace(path)


def train(out: Path, mcfg: ModelConfig, tcfg: TrainConfig, minutes: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(tcfg.seed)
    tok, windows, val_windows, val_bytes = prepare(out, tcfg, mcfg)
    model = build_model(mcfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tcfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tcfg.lr, betas=(0.9, 0.98))
    step, epoch, history = 0, 0, []
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, epoch, history = state["step"], state["epoch"], state["history"]
        print(f"resumed at step {step} (epoch {epoch})", flush=True)
    print(f"model: {mcfg.family} d={mcfg.d_model} layers={mcfg.n_layers} params={model.num_params():,}", flush=True)
    deadline = time.time() + minutes * 60
    last_ckpt = time.time()
    model.train()
    while step < tcfg.total_steps and time.time() < deadline:
        batches = make_batches(windows, tcfg.tokens_per_batch, np.random.default_rng(tcfg.seed + epoch))
        per_epoch = len(batches)
        start = step - sum(h.get("epoch_steps", 0) for h in history if h.get("kind") == "epoch")
        t0, tok_count, loss_acc, n_acc = time.time(), 0, 0.0, 0
        for i in range(max(0, start), per_epoch):
            if step >= tcfg.total_steps or time.time() >= deadline:
                break
            model.set_qat(step >= tcfg.qat_from * tcfg.total_steps)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, tcfg)
            loss, n = batch_loss(model, batches[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
            opt.step()
            step += 1
            tok_count += n
            loss_acc += float(loss) * n
            n_acc += n
            if step % 50 == 0:
                dt = time.time() - t0
                print(f"step {step}/{tcfg.total_steps} epoch {epoch} loss {loss_acc / n_acc / math.log(2):.3f} bits/token "
                      f"lr {lr_at(step, tcfg):.2e} {tok_count / dt:.0f} tok/s", flush=True)
                history.append({"kind": "train", "step": step, "bits_per_token": loss_acc / n_acc / math.log(2),
                                "tokens_per_s": tok_count / dt})
                t0, tok_count, loss_acc, n_acc = time.time(), 0, 0.0, 0
            if step % 500 == 0 or time.time() - last_ckpt > tcfg.checkpoint_minutes * 60:
                if step % 500 == 0:
                    bpb = val_bits_per_byte(model, val_windows, val_bytes, tcfg.tokens_per_batch)
                    history.append({"kind": "val", "step": step, "bits_per_byte": bpb, "qat": step >= tcfg.qat_from * tcfg.total_steps})
                    print(f"step {step} val {bpb:.3f} bits/byte ({8 / bpb:.2f}x)", flush=True)
                save_checkpoint(ckpt, model, opt, step, epoch, mcfg, tcfg, history)
                last_ckpt = time.time()
        else:
            history.append({"kind": "epoch", "epoch": epoch, "epoch_steps": per_epoch})
            epoch += 1
    bpb = val_bits_per_byte(model, val_windows, val_bytes, tcfg.tokens_per_batch)
    history.append({"kind": "val", "step": step, "bits_per_byte": bpb, "qat": step >= tcfg.qat_from * tcfg.total_steps})
    print(f"stopped at step {step}: val {bpb:.3f} bits/byte ({8 / bpb:.2f}x)", flush=True)
    save_checkpoint(ckpt, model, opt, step, epoch, mcfg, tcfg, history)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.standalone", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="run directory (checkpoint, tokenizer)")
    p.add_argument("--minutes", type=float, default=60.0, help="stop (resumably) after this many minutes")
    p.add_argument("--export", type=Path, help="export the checkpoint to this artifact directory and exit")
    p.add_argument("--version", default="v1", help="encoder version name of the exported artifact")
    p.add_argument("--decode-window", type=int, default=0,
                   help="export: attention window in tokens at decode (0: the training context)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    for f in dataclasses.fields(ModelConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    for f in dataclasses.fields(TrainConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    a = vars(p.parse_args(argv))
    if a["threads"]:
        torch.set_num_threads(a["threads"])
    mcfg = ModelConfig(**{f.name: a[f.name] for f in dataclasses.fields(ModelConfig)})
    tcfg = TrainConfig(**{f.name: a[f.name] for f in dataclasses.fields(TrainConfig)})
    if a["export"]:
        from train.release import export_run

        export_run(a["out"], a["export"], a["version"], tcfg, window=a["decode_window"])
        return
    train(a["out"], mcfg, tcfg, a["minutes"])


if __name__ == "__main__":
    main()
