"""The training job's config: one frozen dataclass tree, loaded from a YAML preset plus overrides.

    python -m train --config train/configs/tiny.yaml optim.lr=3e-3 scaling.num_workers=1
    python -m train --config train/configs/finetune.yaml data.source=DATASET init_from=models/v1 run.max_minutes=5

Tune builds the same tree per trial (tune/ overrides model.* and optim.lr), so a trial is exactly a
training job.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from nbmf.models import ModelConfig
from train.jobconfig import ConfigError, from_dict, load_config, to_dict


@dataclass(frozen=True)
class DataConfig:
    # A collected dataset (`nbmf collect`: Parquet shards + manifest.json with train/val/test splits),
    # or a directory holding corpus-format train.jsonl / val.jsonl (/ test.jsonl), e.g. data/sample.
    source: str = "data/sample"  # local path or URI (s3://, gs://): a remote source is cached on the driver
    train_records: int = 0  # 0 = all; else the first N train records (quick runs, tests)
    val_records: int = 0  # 0 = all; else the first N val records scored for bits/byte each epoch
    test_share: float = 0.5  # JSONL sources without test.jsonl: share of val.jsonl held out as test (by id hash)
    include_semantic: bool = False  # collected semantic (non-exact) records stay out of lossless training
    semantic_share: float = 0.1  # share of train records also trained in their canonical (semantic) form
    tokenizer_records: int = 20000  # train records the BPE tokenizer is fitted on (once, by the driver)
    tokens_per_batch: int = 8192  # tokens per worker per step, padding included


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 2  # passes over each worker's shard
    max_steps: int = 0  # 0 = epochs * steps_per_epoch; else the run (and its LR schedule) ends here
    lr: float = 2e-3  # peak, after warmup; cosine decay to lr_min at the last step
    lr_min: float = 2e-4
    warmup: int = 200  # steps of linear warmup
    weight_decay: float = 0.01  # on matrices only (not gains or embeddings' norms)
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    qat_from: float = 0.85  # share of the schedule after which int8 fake quantization is on (export is int8)
    # "steps": LR and QAT follow step / total steps; "time": they follow trained seconds / run.max_minutes, so a
    # run of a fixed wall-clock budget (adapting a model in N minutes) ends with its schedule and QAT complete
    schedule: str = "steps"
    seed: int = 0


@dataclass(frozen=True)
class ScalingConf:
    num_workers: int = 2  # Ray Train workers (DDP ranks)
    use_gpu: bool = False  # one GPU per worker, NCCL, bf16 autocast
    resources_per_worker: dict[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    placement_strategy: str = "PACK"  # PACK | SPREAD | STRICT_PACK | STRICT_SPREAD


@dataclass(frozen=True)
class RunConf:
    name: str = ""  # "" -> "<preset>-<UTC time>"; --resume continues the run of this name
    storage_path: str = "runs"  # local dir (made absolute) or a URI (s3://..., gs://...) shared by all nodes
    max_failures: int = 2  # worker-group restarts, each from the latest checkpoint; -1 = unlimited
    # Wall-clock minutes of training in this invocation; 0 = no limit. With optim.schedule "steps" the run stops
    # at that step with a checkpoint (continue it with --resume); with "time" it is the schedule's length.
    max_minutes: float = 0.0
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints; 0 = at epoch ends only
    val_every: int = 0  # steps between validations (each with a checkpoint); 0 = at epoch ends only
    num_to_keep: int = 2  # checkpoints kept in storage (the newest ones)
    log_every: int = 20  # steps between training-metric logs (stdout and W&B)
    fail_at_step: int = 0  # fault injection (tests): rank 0 dies once at this step; 0 = never
    fail_delay_s: float = 3.0  # seconds between the last checkpoint report and the injected crash (RAY-HERE.md)


@dataclass(frozen=True)
class WandbConf:
    enabled: bool = True
    project: str = "nbmf"
    group: str = ""  # "" -> the run name; a Tune search groups its trials under the search name
    mode: str = ""  # "" -> W&B's own choice (WANDB_MODE, a key from `wandb login`/WANDB_API_KEY), else offline
    dir: str = ""  # "" -> <storage>/<run>/wandb; offline run files are copied there when storage is a URI


@dataclass(frozen=True)
class ExportConf:
    enabled: bool = True  # export the final model to an int8 integer-runtime codec artifact
    version: str = "v1"  # encoder version written into the artifact (a registry renumbers on register)
    bench_records: int = 64  # fixed val records (first N) sized and timed for the manifest's bench numbers
    # Attention window (tokens) the artifact decodes with; 0 = the init_from artifact's window, else model.context.
    # ALiBi has no position table, so any window works: a narrower one decodes faster (v1: 128 of 256, -0.1% ratio)
    decode_window: int = 0


@dataclass(frozen=True)
class TrainJobConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scaling: ScalingConf = field(default_factory=ScalingConf)
    run: RunConf = field(default_factory=RunConf)
    wandb: WandbConf = field(default_factory=WandbConf)
    export: ExportConf = field(default_factory=ExportConf)
    # A released artifact directory (e.g. models/v1) to warm-start from: its tokenizer and weights (int8,
    # dequantized: train/warmstart.py) and its architecture, except model.context, the training window
    init_from: str = ""

    def __post_init__(self):
        problems = []
        if self.scaling.num_workers < 1:
            problems.append("scaling.num_workers: at least 1 worker")
        if self.optim.epochs < 1 and self.optim.max_steps < 1:
            problems.append("optim: set epochs >= 1 or max_steps >= 1")
        if not 0.0 <= self.data.semantic_share <= 1.0:
            problems.append("data.semantic_share: a share in [0, 1]")
        if not 0.0 <= self.data.test_share < 1.0:
            problems.append("data.test_share: a share in [0, 1)")
        if self.data.tokens_per_batch < self.model.context + 1:
            problems.append(f"data.tokens_per_batch: at least model.context + 1 = {self.model.context + 1}")
        if self.run.name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._=-]*", self.run.name):
            problems.append("run.name: letters, digits and . _ = - only (it names a storage directory)")
        if self.optim.schedule not in ("steps", "time"):
            problems.append("optim.schedule: steps or time")
        if self.optim.schedule == "time" and self.run.max_minutes <= 0:
            problems.append("optim.schedule=time: set run.max_minutes > 0 (the schedule's length)")
        if self.run.max_minutes < 0 or self.run.val_every < 0:
            problems.append("run.max_minutes and run.val_every: 0 (off) or positive")
        if self.export.decode_window < 0:
            problems.append("export.decode_window: 0 (default) or a window in tokens")
        if self.wandb.mode not in ("", "online", "offline", "disabled"):
            problems.append("wandb.mode: one of '', online, offline, disabled")
        if problems:
            raise ValueError("; ".join(problems))


def load(path=None, overrides=()) -> TrainJobConfig:
    cfg = load_config(TrainJobConfig, path, overrides)
    check_job_paths(cfg, str(path) if path else None)
    return cfg


def check_job_paths(cfg: TrainJobConfig, source: str | None = None) -> None:
    """Inside a submitted Ray job, relative storage paths are a ConfigError (train.storage.path_problems)."""
    from train.storage import path_problems

    problems = path_problems(outputs={"run.storage_path": cfg.run.storage_path, "wandb.dir": cfg.wandb.dir},
                             inputs={"data.source": cfg.data.source})
    if problems:
        raise ConfigError(problems, source)


def from_plain(data: dict) -> TrainJobConfig:
    """Rebuild the config shipped to workers (or stored in a checkpoint) as a plain dict."""
    return from_dict(TrainJobConfig, data)


__all__ = ["ConfigError", "DataConfig", "ExportConf", "OptimConfig", "RunConf", "ScalingConf",
           "TrainJobConfig", "WandbConf", "from_plain", "load", "to_dict"]
