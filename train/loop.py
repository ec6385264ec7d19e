"""``train_loop_per_worker``: the one training loop: every Ray Train worker, every Tune trial, the release.

Plain torch plus ``ray.train`` calls. The schedule is fixed at the start of a run (``steps_per_epoch``
agreed by all ranks, ``total_steps``) and saved in every checkpoint, so a worker group restarted from a
checkpoint continues at the same step, epoch and in-epoch position with the same LR schedule, and ends at
the same step count as an uninterrupted run (not at epoch 1: ray#46814).

The schedule's position is a share in [0, 1]: step / total steps (``optim.schedule: steps``), or trained
seconds / ``run.max_minutes`` (``time``: adapt a model in N minutes, schedule and QAT complete at the end).
The LR warms up over ``optim.warmup`` steps, then follows a cosine of that share; int8 fake quantization
(QAT) is on from ``optim.qat_from``. ``run.max_minutes`` with a step schedule stops the run at a step with a
checkpoint (``--resume`` continues it). All ranks agree on time (an all-reduce of each rank's clock), so they
stop at the same step. The final step exports the int8 artifact (``export.decode_window``) with the one
manifest schema of ``train.export``.
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
MAX_STEPS = 1 << 40  # a time schedule's step cap when optim.max_steps is 0: the clock ends it


def lr_at(step: int, lr: float, lr_min: float, warmup: int, total: int) -> float:
    """Linear warmup to ``lr``, then cosine to ``lr_min`` at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * p))


def lr_at_share(step: int, share: float, lr: float, lr_min: float, warmup: int) -> float:
    """Linear warmup to ``lr`` over ``warmup`` steps, then cosine to ``lr_min`` as ``share`` goes 0 -> 1."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * min(1.0, max(0.0, share))))


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
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
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
    ``data_hash``, ``bench_rows`` (fixed val records for the export's bench numbers), ``dictionary`` and
    ``dictionary_info`` (the fallback's), ``command`` and ``invocation`` (provenance), ``warm_start``
    (``init_from``: float state and where it came from) and ``decode_window``."""
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
    warm = config.get("warm_start")
    if warm:
        from train.warmstart import load_into

        load_into(model, warm["state"])
    opt = make_optimizer(model, optim)
    tokenizer = Tokenizer.from_json(config["tokenizer"])
    state = {"step": 0, "history": [], "resumed_from": [], "trained_s": 0.0, "commands": []}
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
    if state.get("invocation") != config.get("invocation"):  # a new command, not a worker-group restart
        state["invocation"] = config.get("invocation")
        state["commands"] = state.get("commands", []) + [config.get("command", "")]
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
        # a time schedule ends on the clock; max_steps (if set) still caps it
        state["total_steps"] = optim.max_steps or (MAX_STEPS if optim.schedule == "time" else optim.epochs * spe)
    spe, total = state["steps_per_epoch"], state["total_steps"]
    timed = optim.schedule == "time"
    budget_s = run.max_minutes * 60.0

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

    def validate(step: int, qat: bool) -> float:
        bpb = val_bits_per_byte(model, val_windows, val_bytes, tpb, device, amp)
        state["val_bpb"] = bpb
        state["history"].append({"step": step, "val_bits_per_byte": bpb, "qat": qat})
        logger.log({"val_bits_per_byte": bpb}, step=step)
        if rank == 0:
            print(f"step {step} val {bpb:.3f} bits/byte{' (QAT)' if qat else ''}", flush=True)
        return bpb

    step = state["step"]
    trained_before = float(state.get("trained_s", 0.0))
    start = time.time()
    share = state.get("share", 0.0)
    stopped = False  # by run.max_minutes before a step schedule's end
    qat = share >= optim.qat_from
    if warm and step == 0:  # the released model itself (int8: QAT on) on this data: the history's first point
        raw_model.set_qat(True)
        validate(0, True)
    model.train()
    log_t, log_nats, log_tokens = time.time(), 0.0, 0
    while step < total and share < 1.0 and not stopped:
        epoch, pos = divmod(step, spe)
        batches = make_batches(windows, tpb, np.random.default_rng([optim.seed, epoch, rank]))
        for i in range(pos, spe):
            qat = share >= optim.qat_from
            raw_model.set_qat(qat)
            lr = lr_at_share(step, share, optim.lr, optim.lr_min, optim.warmup)
            for g in opt.param_groups:
                g["lr"] = lr
            loss, n = batch_nats(model, batches[i % len(batches)], device, amp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
            opt.step()
            step += 1
            elapsed = _all_reduce([time.time() - start], "max", device)[0]  # one clock for every rank
            state["step"], state["trained_s"] = step, trained_before + elapsed
            share = state["trained_s"] / budget_s if timed else step / total
            state["share"] = share
            stopped = not timed and budget_s > 0 and elapsed >= budget_s and step < total
            last = step >= total or share >= 1.0 or stopped
            log_nats += float(loss.detach()) * n
            log_tokens += n
            if step % run.log_every == 0 or last:
                dt = time.time() - log_t
                nats, tokens = _all_reduce([log_nats, float(log_tokens)], "sum", device)
                m = {"loss_bits_per_token": nats / max(tokens, 1) / math.log(2), "lr": lr, "epoch": epoch,
                     "tokens_per_s": tokens / max(dt, 1e-9), "tokens_per_s_per_worker": tokens / max(dt, 1e-9) / world,
                     "qat": qat}
                if rank == 0:
                    print(f"step {step}/{total if not timed else '-'} epoch {epoch} loss "
                          f"{m['loss_bits_per_token']:.3f} bits/token lr {lr:.2e} {m['tokens_per_s']:.0f} tok/s "
                          f"{state['trained_s']:.0f}s{' QAT' if qat else ''}", flush=True)
                    state["history"].append({"step": step, **m})
                logger.log(m, step=step)
                log_t, log_nats, log_tokens = time.time(), 0.0, 0
            _maybe_crash(run, step, rank, config.get("marker_dir", ""))
            if last:
                break
            if step % spe == 0 or (run.val_every and step % run.val_every == 0):
                bpb = validate(step, qat)
                report({"step": step, "epoch": step // spe, "val_bpb": bpb, "final": False}, True)
            elif run.checkpoint_every and step % run.checkpoint_every == 0:
                report({"step": step, "epoch": epoch, "final": False}, True)

    if stopped:
        if rank == 0:
            print(f"stopped by run.max_minutes={run.max_minutes:g} at step {step} of {total}: continue with "
                  f"--resume run.name={config['run_name']}", flush=True)
        report({"step": step, "epoch": step // spe, "final": False, "stopped": "max_minutes",
                "total_steps": total}, True)
        logger.finish()
        return

    val_bpb = validate(step, qat)
    final = {"step": step, "epoch": math.ceil(step / spe), "val_bpb": val_bpb, "final": True,
             "total_steps": total if not timed else step, "trained_s": state["trained_s"],
             "resumed_from": list(state.get("resumed_from", []))}
    bench: dict = {}

    def export(out_dir: Path) -> dict:
        from train.export import export_with_bench, provenance

        bench.update(export_with_bench(raw_model, mcfg, tokenizer, out_dir, version=job.export.version,
                                       rows=config.get("bench_rows", []), val_bpb=val_bpb,
                                       data_hash=config.get("data_hash", ""),
                                       training=provenance(job_dict, state, warm and warm.get("about")),
                                       dictionary=config.get("dictionary"),
                                       dictionary_info=config.get("dictionary_info"),
                                       decode_window=config.get("decode_window", 0),
                                       match=warm and warm.get("match")))
        row = bench.pop("row", None)
        if logger.run is not None and row is not None:  # rank 0 with W&B on: what a team compares
            from train.export import bench_plot

            logger.by_type("bench/by_type", row["by_type"])
            with tempfile.TemporaryDirectory(prefix="nbmf-plot-") as tmp:
                png = Path(tmp) / "bench.png"
                refs = bench_plot(row, config["bench_rows"], config.get("dictionary"), png)
                logger.image("bench/plot", png, caption="ratio by record size: this artifact and the anchors")
            logger.references(refs, ours=bench.get("ratio"))
        logger.log_artifact(out_dir, name=f"codec-{config['run_name']}", metadata=bench)
        return {f"bench_{k}": v for k, v in bench.items()}

    if rank == 0:
        print(f"done: step {step}, {state['trained_s']:.0f}s trained, val {val_bpb:.3f} bits/byte", flush=True)
    report(final, True, export if job.export.enabled else None)
    if rank == 0:
        logger.summary({**final, **{f"bench/{k}": v for k, v in bench.items()}})
    logger.finish()
