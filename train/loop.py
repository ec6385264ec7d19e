"""``train_loop_per_worker``: the DDP training loop every Ray Train worker (and every Tune trial) runs.

Plain torch plus ``ray.train`` calls. The schedule is fixed in steps at the start of a run
(``steps_per_epoch`` agreed by all ranks, ``total_steps``) and saved in every checkpoint, so a worker
group restarted from a checkpoint continues at the same step, epoch and in-epoch position with the same
LR schedule, and ends at the same step count as an uninterrupted run (not at epoch 1: ray#46814).
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from nbmf.models.batching import PAD, make_batches

FAIL_MARKER = ".fail_injected"


def lr_at(step: int, lr: float, lr_min: float, warmup: int, total: int) -> float:
    """Linear warmup to ``lr``, then cosine to ``lr_min`` at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * p))


def make_optimizer(model, optim):
    import torch

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": optim.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=optim.lr, betas=(0.9, 0.98))


def batch_nats(model, batch: np.ndarray, device, amp: bool):
    """(mean next-token cross entropy in nats over real targets, number of targets)."""
    import torch
    from torch.nn import functional as F

    t = torch.from_numpy(batch).to(device, non_blocking=True)
    x, y = t[:, :-1].clamp_min(0), t[:, 1:]
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=PAD)
    return loss, int((y != PAD).sum())


def _all_reduce(values: list[float], op: str, device) -> list[float]:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN}[op])
    return t.tolist()


def val_bits_per_byte(model, windows, raw_bytes: int, tokens_per_batch: int, device, amp: bool) -> float:
    """Bits per raw byte over every rank's validation shard: sum of token NLL (bits) / raw bytes."""
    import torch

    model.eval()
    nats = 0.0
    with torch.no_grad():
        for batch in make_batches(windows, tokens_per_batch, np.random.default_rng(0)):
            loss, n = batch_nats(model, batch, device, amp)
            nats += float(loss) * n
    model.train()
    nats, total_bytes = _all_reduce([nats, float(raw_bytes)], "sum", device)
    return nats / math.log(2) / max(total_bytes, 1.0)


def _maybe_crash(run, step: int, rank: int, marker_dir: str) -> None:
    """Fault injection for tests: rank 0 dies once (marker file in the run directory) at ``fail_at_step``."""
    if not run.fail_at_step or step != run.fail_at_step or rank != 0 or not marker_dir:
        return
    marker = Path(marker_dir) / FAIL_MARKER
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"worker crash injected at step {step}\n")
    # Let the previous checkpoint finish registering first: a worker that dies within milliseconds of
    # ray.train.report can die before the controller records it (RAY-HERE.md).
    time.sleep(run.fail_delay_s)
    print(f"[fault injection] rank 0 exits at step {step}", flush=True)
    os._exit(1)


def train_loop_per_worker(config: dict) -> None:
    """Config (built by train.driver): ``job`` (TrainJobConfig as a dict), ``tokenizer`` (JSON),
    ``run_name``, ``marker_dir`` (local dir for the fault-injection marker), ``wandb`` (RunLogger kwargs),
    ``data_hash``, ``bench_rows`` (fixed val records for the export's bench numbers)."""
    import ray.train
    import ray.train.torch
    import torch

    from nbmf.models import build_model
    from nbmf.tokenizer import Tokenizer
    from train import checkpoint as ckpt_io
    from train.config import from_plain, to_dict
    from train.data import shard_windows
    from train.wandb_logging import RunLogger

    job = from_plain(config["job"])
    mcfg, optim, run = job.model, job.optim, job.run
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    amp = device.type == "cuda"  # bf16 autocast on GPU; CPU trains in float32
    torch.manual_seed(optim.seed)

    model = build_model(mcfg)
    opt = make_optimizer(model, optim)
    tokenizer = Tokenizer.from_json(config["tokenizer"])
    state = {"step": 0, "history": [], "resumed_from": []}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            loaded = ckpt_io.load(d)
        model.load_state_dict(loaded.model_state)
        opt.load_state_dict(loaded.optim_state)
        tokenizer = Tokenizer.from_json(loaded.tokenizer_json)
        state = loaded.state
        state["resumed_from"] = state.get("resumed_from", []) + [state["step"]]
        print(f"[rank {rank}] resumed from checkpoint at step {state['step']}", flush=True)
    model = ray.train.torch.prepare_model(model)
    raw_model = model.module if hasattr(model, "module") else model

    t0 = time.time()
    train_shard = ray.train.get_dataset_shard("train").iter_batches(batch_size=256, batch_format="numpy")
    windows, train_bytes, n_train = shard_windows(train_shard, tokenizer, mcfg, job.data.semantic_share, optim.seed)
    val_shard = ray.train.get_dataset_shard("val").iter_batches(batch_size=256, batch_format="numpy")
    val_windows, val_bytes, n_val = shard_windows(val_shard, tokenizer, mcfg)
    tpb = job.data.tokens_per_batch
    if not windows:
        raise RuntimeError(f"rank {rank}'s training shard is empty: use fewer workers or more data")
    local_steps = len(make_batches(windows, tpb, np.random.default_rng(0)))
    print(f"[rank {rank}] shard: {n_train} train records ({train_bytes:,} B, {len(windows)} windows, "
          f"{local_steps} batches), {n_val} val records; {time.time() - t0:.1f}s", flush=True)
    if "steps_per_epoch" not in state:
        spe = int(_all_reduce([float(local_steps)], "min", device)[0])
        if spe < 1:
            raise RuntimeError("a worker's training shard holds no complete batch: use fewer workers, "
                               "more data (data.train_records) or a smaller data.tokens_per_batch")
        state["steps_per_epoch"] = spe
        state["total_steps"] = optim.max_steps or optim.epochs * spe
    spe, total = state["steps_per_epoch"], state["total_steps"]

    logger = RunLogger(enabled=rank == 0 and job.wandb.enabled, config=to_dict(job), **config["wandb"])
    job_dict = config["job"]

    def report(metrics: dict, with_checkpoint: bool, artifact_fn=None) -> None:
        """All ranks report (a collective); rank 0 attaches the checkpoint."""
        if rank != 0 or not with_checkpoint:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory(prefix="nbmf-ckpt-") as tmp:
            ckpt_io.save(tmp, model=raw_model, optimizer=opt, tokenizer=tokenizer, config=job_dict, state=state)
            if artifact_fn is not None:
                metrics = {**metrics, **artifact_fn(Path(tmp) / ckpt_io.ARTIFACT)}
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    step = state["step"]
    val_bpb = state.get("val_bpb")
    model.train()
    log_t, log_nats, log_tokens = time.time(), 0.0, 0
    while step < total:
        epoch, pos = divmod(step, spe)
        batches = make_batches(windows, tpb, np.random.default_rng([optim.seed, epoch, rank]))
        for i in range(pos, spe):
            if step >= total:
                break
            raw_model.set_qat(step >= optim.qat_from * total)
            lr = lr_at(step, optim.lr, optim.lr_min, optim.warmup, total)
            for g in opt.param_groups:
                g["lr"] = lr
            loss, n = batch_nats(model, batches[i % len(batches)], device, amp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
            opt.step()
            step += 1
            state["step"] = step
            log_nats += float(loss.detach()) * n
            log_tokens += n
            if step % run.log_every == 0 or step == total:
                dt = time.time() - log_t
                nats, tokens = _all_reduce([log_nats, float(log_tokens)], "sum", device)
                m = {"loss_bits_per_token": nats / max(tokens, 1) / math.log(2), "lr": lr, "epoch": epoch,
                     "tokens_per_s": tokens / max(dt, 1e-9), "tokens_per_s_per_worker": tokens / max(dt, 1e-9) / world}
                if rank == 0:
                    print(f"step {step}/{total} epoch {epoch} loss {m['loss_bits_per_token']:.3f} bits/token "
                          f"lr {lr:.2e} {m['tokens_per_s']:.0f} tok/s", flush=True)
                    state["history"].append({"step": step, **m})
                logger.log(m, step=step)
                log_t, log_nats, log_tokens = time.time(), 0.0, 0
            _maybe_crash(run, step, rank, config.get("marker_dir", ""))
            epoch_end = step % spe == 0
            if step == total:
                break
            if epoch_end:
                val_bpb = val_bits_per_byte(model, val_windows, val_bytes, tpb, device, amp)
                state["val_bpb"] = val_bpb
                state["history"].append({"step": step, "val_bits_per_byte": val_bpb})
                logger.log({"val_bits_per_byte": val_bpb}, step=step)
                if rank == 0:
                    print(f"step {step} epoch {step // spe} val {val_bpb:.3f} bits/byte", flush=True)
                report({"step": step, "epoch": step // spe, "val_bpb": val_bpb, "final": False}, True)
            elif run.checkpoint_every and step % run.checkpoint_every == 0:
                report({"step": step, "epoch": epoch, "final": False}, True)

    val_bpb = val_bits_per_byte(model, val_windows, val_bytes, tpb, device, amp)
    state["val_bpb"] = val_bpb
    state["history"].append({"step": step, "val_bits_per_byte": val_bpb})
    logger.log({"val_bits_per_byte": val_bpb}, step=step)
    final = {"step": step, "epoch": math.ceil(step / spe), "val_bpb": val_bpb, "final": True,
             "total_steps": total, "resumed_from": list(state.get("resumed_from", []))}
    bench: dict = {}

    def export(out_dir: Path) -> dict:
        from train.export import export_with_bench

        bench.update(export_with_bench(raw_model, mcfg, tokenizer, out_dir, version=job.export.version,
                                       rows=config.get("bench_rows", []), val_bpb=val_bpb,
                                       data_hash=config.get("data_hash", ""), training=_training_info(job, state),
                                       dictionary=config.get("dictionary"),
                                       dictionary_info=config.get("dictionary_info")))
        logger.log_artifact(out_dir, name=f"codec-{config['run_name']}", metadata=bench)
        return {f"bench_{k}": v for k, v in bench.items()}

    if rank == 0:
        print(f"done: step {step}, val {val_bpb:.3f} bits/byte", flush=True)
    report(final, True, export if job.export.enabled else None)
    if rank == 0:
        logger.summary({**final, **{f"bench/{k}": v for k, v in bench.items()}})
    logger.finish()


def _training_info(job, state) -> dict:
    return {"steps": state["step"], "steps_per_epoch": state["steps_per_epoch"],
            "workers": job.scaling.num_workers, "lr": job.optim.lr, "epochs": job.optim.epochs,
            "val_bits_per_byte": state.get("val_bpb")}
