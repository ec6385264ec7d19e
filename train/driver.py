"""The training job's driver: config -> tokenizer -> Ray Datasets -> TorchTrainer -> codec artifact.

    python -m train --config train/configs/tiny.yaml [key=value ...] [--resume]
    python -m train --config train/configs/release.yaml run.storage_path=/abs/runs run.name=release [--resume]
    python -m train --config train/configs/finetune.yaml data.source=DATASET init_from=models/v1 run.max_minutes=5
    ray job submit --working-dir . -- python -m train --config train/configs/tiny.yaml run.storage_path=/abs/runs

The last line of standard output is the exported artifact's directory (when the run exported one).

Without a running cluster ``python -m train`` starts a local Ray; inside ``ray job submit`` (or with
RAY_ADDRESS set, or a ``ray start`` cluster on this machine) it joins that cluster.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nbmf.record import Record
from train import storage as st
from train.config import TrainJobConfig, load
from train.data import Source, data_hash, iter_rows, ray_dataset, resolve_source
from train.jobconfig import ConfigError, to_dict


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_ray(address: str = "", **kwargs) -> None:
    """Join the running cluster if there is one (job submission, RAY_ADDRESS, `ray start`), else start one.

    ``address``: "" = that default; "local" = always a private new cluster; else a cluster address.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    if address not in ("", "local") or (not address and os.environ.get("RAY_ADDRESS")):
        ray.init(address=address or None, **kwargs)
        return
    if not address:
        try:
            ray.init(address="auto", **kwargs)
            return
        except ConnectionError:
            pass
    # A private cluster. Its processes get RAY_ADDRESS, so Ray's own state-API users inside it (Train's
    # placement-group cleaner) find it even when other Ray instances run on this machine; without it
    # the cleaner dies, placement groups leak and later Tune trials never start.
    port = free_port()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster needs no token
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    os.environ["RAY_ADDRESS"] = f"{ray.util.get_node_ip_address()}:{port}"
    ray.init(address="local", **kwargs)


def storage_of(cfg: TrainJobConfig) -> str:
    """Absolute local storage path (relative ones resolve against the current directory; inside a submitted job
    ``train.config.load`` has refused them already) or a URI (train.storage)."""
    return st.resolve(cfg.run.storage_path)


def local_run_dir(storage: str, name: str) -> Path:
    """Where this node keeps the run's driver files (tokenizer, result.json, the artifact's copy): the run's
    directory in local storage; with remote storage ./runs/<name>, uploaded to ``<storage>/<name>/driver`` at the
    end (``keep_driver_files``), since a job's working directory vanishes with it."""
    if st.is_uri(storage):
        return Path("runs").resolve() / name
    return Path(storage) / name


def keep_driver_files(storage: str, name: str, local: Path) -> str:
    """With remote storage: copy the run's driver files to ``<storage>/<name>/driver``; returns where (or '')."""
    if not st.is_uri(storage) or not local.is_dir():
        return ""
    dest = st.join(storage, name, "driver")
    st.copy_dir(str(local), dest)
    return dest


def train_tokenizer(src: Source, vocab_size: int, records: int):
    from nbmf.tokenizer import Tokenizer

    t = time.time()
    tok = Tokenizer.train((r.raw for r in iter_rows(src, "train", records)), vocab_size=vocab_size)
    print(f"tokenizer: {tok.vocab_size} ids from {records or 'all'} train records in {time.time() - t:.1f}s",
          flush=True)
    return tok


@dataclass
class Prepared:
    """What every run of one data source shares: fixed val records for bench numbers, the data hash, and the
    classical fallback's zstd dictionary that every artifact exported from it ships (nbmf.dictionary)."""

    source: Source
    bench_rows: list[Record]  # picklable: they travel to the workers in the loop config
    data_hash: str
    dictionary: bytes  # 110 KiB: travels in the loop config too
    dictionary_info: dict


def fallback_dictionary(src: Source) -> tuple[bytes, dict]:
    """The fallback's dictionary of the train split, by nbmf.dictionary's recipe (cached across runs)."""
    from nbmf.dictionary import about, train_dictionary

    t = time.time()
    data, info = train_dictionary(src.jsonl_file("train") if src.kind == "jsonl" else src.path)
    print(f"zstd dictionary: {len(data)} bytes from {info['samples']} train records in {time.time() - t:.1f}s"
          + (" (cached)" if info["cached"] else ""), flush=True)
    return data, about(info)


def prepare(cfg: TrainJobConfig) -> Prepared:
    src = resolve_source(cfg.data.source, cfg.data.test_share)
    bench_rows = list(iter_rows(src, "val", cfg.export.bench_records))
    return Prepared(src, bench_rows, data_hash(src), *fallback_dictionary(src))


def apply_warm_start(cfg: TrainJobConfig, warm) -> TrainJobConfig:
    """The config with the warm-start artifact's architecture (``warm``: train.warmstart.WarmStart), keeping
    the config's training window ``model.context`` (ALiBi: a model trains and decodes at any window)."""
    if warm is None:
        return cfg
    model = dataclasses.replace(warm.cfg, context=cfg.model.context)
    if model != cfg.model:
        changed = [f"{f.name}={getattr(model, f.name)}" for f in dataclasses.fields(model)
                   if getattr(model, f.name) != getattr(cfg.model, f.name)]
        print(f"init_from {warm.about['path']} ({warm.about['version']}): model {', '.join(changed)}", flush=True)
    return dataclasses.replace(cfg, model=model)


def warm_start_of(cfg: TrainJobConfig):
    """``init_from``'s artifact as a WarmStart (verified, dequantized), or None."""
    if not cfg.init_from:
        return None
    from train.warmstart import load_warm_start

    return load_warm_start(cfg.init_from)


def decode_window(cfg: TrainJobConfig, warm) -> int:
    """export.decode_window, else the warm-start artifact's window, else 0 (the training context)."""
    return cfg.export.decode_window or (warm.cfg.context if warm is not None else 0)


def datasets(cfg: TrainJobConfig, src: Source) -> dict:
    return {"train": ray_dataset(src, "train", cfg.data.train_records, cfg.data.include_semantic),
            "val": ray_dataset(src, "val", cfg.data.val_records, cfg.data.include_semantic)}


def with_vocab(cfg: TrainJobConfig, vocab_size: int) -> TrainJobConfig:
    """The config with the model's output alphabet set to the tokenizer's real size."""
    if cfg.model.vocab_size == vocab_size:
        return cfg
    print(f"note: the tokenizer learned {vocab_size} ids (asked {cfg.model.vocab_size}); the model uses {vocab_size}",
          flush=True)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab_size))


def build_trainer(cfg: TrainJobConfig, *, name: str, storage: str, tokenizer_json: str, prepared: Prepared,
                  wandb_group: str = "", callbacks=(), marker_dir: Path | None = None, command: str = "",
                  warm=None):
    """The TorchTrainer of one training run (a `python -m train` job or one Tune trial). With ``cfg.init_from``
    the run starts from that artifact's weights and tokenizer (``warm``: already loaded, else loaded here), and
    its architecture replaces ``cfg.model``'s (except the training context)."""
    import uuid

    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from train.loop import train_loop_per_worker
    from train.wandb_logging import worker_runtime_env  # the driver's W&B credentials reach the rank-0 worker

    if warm is None:
        warm = warm_start_of(cfg)
    if warm is not None:
        cfg = apply_warm_start(cfg, warm)
        tokenizer_json = warm.tokenizer_json
    local = local_run_dir(storage, name)
    wandb_dir = cfg.wandb.dir or str(local / "wandb")
    loop_config = {
        "job": to_dict(cfg),
        "tokenizer": tokenizer_json,
        "run_name": name,
        "marker_dir": str(marker_dir or local),
        "data_hash": prepared.data_hash,
        "bench_rows": prepared.bench_rows,
        "dictionary": prepared.dictionary,
        "dictionary_info": prepared.dictionary_info,
        "command": command,
        "invocation": uuid.uuid4().hex,  # a worker-group restart keeps it; a --resume gets a new one
        "warm_start": {"state": warm.state, "about": warm.about, "match": warm.match} if warm is not None else None,
        "decode_window": decode_window(cfg, warm),
        "wandb": {"project": cfg.wandb.project, "group": wandb_group or cfg.wandb.group or name, "name": name,
                  "mode": cfg.wandb.mode, "directory": str(Path(wandb_dir).resolve())},
    }
    s = cfg.scaling
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                                     resources_per_worker=dict(s.resources_per_worker),
                                     placement_strategy=s.placement_strategy),
        run_config=RunConfig(name=name, storage_path=storage, worker_runtime_env=worker_runtime_env(),
                             failure_config=FailureConfig(max_failures=cfg.run.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.num_to_keep),
                             callbacks=list(callbacks)),
        datasets=datasets(cfg, prepared.source),
    )


def copy_artifact(result, dest: Path) -> Path | None:
    """Copy the exported artifact out of the final checkpoint (local or cloud storage) to ``dest``."""
    from train.checkpoint import ARTIFACT

    if result.checkpoint is None:
        return None
    with result.checkpoint.as_directory() as d:
        src = Path(d) / ARTIFACT
        if not src.is_dir():
            return None
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest)
    return dest


def run_training(cfg: TrainJobConfig, *, name: str, resume: bool = False, address: str = "",
                 command: str = "", warm=None) -> dict:
    """Train (or continue) the run ``name``; returns its summary (final metrics, artifact path). ``command``: the
    command line recorded in the checkpoint and the artifact's manifest (``training.commands``); ``warm``:
    ``init_from``'s WarmStart when the caller loaded it already (else loaded here)."""
    from nbmf.tokenizer import Tokenizer

    storage = storage_of(cfg)
    local = local_run_dir(storage, name)
    tok_file = local / "tokenizer.json"
    if local.exists() and not resume and any(local.iterdir()):
        raise SystemExit(f"run {name!r} already exists in {storage}: pass --resume to continue it, "
                         "or choose another run.name")
    if resume and not local.exists() and not st.is_uri(storage):
        raise SystemExit(f"nothing to resume: no run {name!r} in {storage}")
    prepared = prepare(cfg)
    warm = warm or warm_start_of(cfg)
    if warm is not None:
        cfg = apply_warm_start(cfg, warm)
        tok = Tokenizer.from_json(warm.tokenizer_json)
    elif tok_file.exists():
        tok = Tokenizer.load(local)
    else:
        tok = train_tokenizer(prepared.source, cfg.model.vocab_size, cfg.data.tokenizer_records)
        local.mkdir(parents=True, exist_ok=True)
        tok.save(local)
    cfg = with_vocab(cfg, tok.vocab_size)
    init_ray(address)
    trainer = build_trainer(cfg, name=name, storage=storage, tokenizer_json=tok.to_json(), prepared=prepared,
                            command=command or f"python -m train (run {name})", warm=warm)
    t0 = time.time()
    result = trainer.fit()
    summary = {"run": name, "storage": storage, "seconds": round(time.time() - t0, 1),
               "metrics": {k: v for k, v in (result.metrics or {}).items()},
               "checkpoint": result.checkpoint.path if result.checkpoint else None}
    artifact = copy_artifact(result, local / "artifact") if cfg.export.enabled else None
    summary["artifact"] = str(artifact) if artifact else None
    local.mkdir(parents=True, exist_ok=True)
    (local / "result.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    kept = keep_driver_files(storage, name, local)
    if kept:
        summary["artifact_uri"] = st.join(kept, "artifact") if artifact else None
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML preset, e.g. train/configs/tiny.yaml")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run named by run.name (same storage) from its latest checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--address", default="", help="Ray cluster to use: default joins a running one (RAY_ADDRESS, "
                   "a job's cluster, `ray start` on this machine) or starts one; 'local' always starts a private one")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=1e-3")
    args = p.parse_args(argv)
    try:
        cfg = load(args.config, args.overrides)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    warm = None
    if cfg.init_from:
        from nbmf.errors import ArtifactError

        try:
            warm = warm_start_of(cfg)  # a bad artifact is refused before Ray starts; loaded once
        except ArtifactError as e:
            print(f"init_from: {e}", file=sys.stderr)
            return 2
    if args.print_config:
        from train.jobconfig import dump_yaml

        print(dump_yaml(cfg), end="")
        return 0
    if args.resume and not cfg.run.name:
        print("--resume needs the run to continue: add run.name=<name> (see `ls <storage_path>`)", file=sys.stderr)
        return 2
    name = cfg.run.name or f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    command = " ".join(["python -m train", *(sys.argv[1:] if argv is None else argv)])
    summary = run_training(cfg, name=name, resume=args.resume, address=args.address, command=command, warm=warm)
    import ray

    ray.shutdown()  # Ray forwards workers' output to this stdout asynchronously: none may follow the last line
    m = summary["metrics"]
    print(json.dumps({"run": name, "step": m.get("step"), "val_bpb": m.get("val_bpb"),
                      "bench_ratio": m.get("bench_ratio"), "bench_decode_ms_p95": m.get("bench_decode_ms_p95"),
                      "trained_s": m.get("trained_s"), "stopped": m.get("stopped"),
                      "artifact": summary["artifact"], "seconds": summary["seconds"]}), flush=True)
    if m.get("stopped"):
        print(f"stopped by run.max_minutes at step {m.get('step')} of {m.get('total_steps')}: continue with "
              f"python -m train --config {args.config} run.name={name} --resume", flush=True)
    if summary["artifact"]:
        print(summary["artifact"], flush=True)  # the last line: scripts read the artifact's directory here
    return 0
