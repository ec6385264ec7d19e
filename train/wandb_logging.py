"""Weights & Biases logging for rank 0: config, training curves, validation, the final artifact.

Offline by default (no account, no network call); online when ``WANDB_API_KEY`` is set. Every W&B
directory (run files, cache, config, staged artifacts) lives under one local ``dir`` that outlives the
worker process: inside a Ray worker the default locations are per-process and get lost (RAY-HERE.md).
``wandb sync <dir>/wandb/offline-run-*`` uploads an offline run later.
"""
from __future__ import annotations

import os
import re
from pathlib import Path


def resolve_mode(mode: str) -> str:
    """'' -> online with an API key in the environment, else offline."""
    if mode:
        return mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def run_id(name: str) -> str:
    """A W&B run id from a run name (W&B ids: letters, digits, - and _, at most 64 chars)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)[-64:]


class RunLogger:
    """One W&B run; every method is a no-op when disabled (other ranks, ``wandb.enabled: false``)."""

    def __init__(self, *, enabled: bool, project: str = "nbmf", group: str = "", name: str = "",
                 mode: str = "", directory: str = "", config: dict | None = None, job_type: str = "train"):
        self.run = None
        if not enabled:
            return
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for var, sub in (("WANDB_DIR", ""), ("WANDB_CACHE_DIR", ".cache"), ("WANDB_CONFIG_DIR", ".config"),
                         ("WANDB_DATA_DIR", ".data"), ("WANDB_ARTIFACT_DIR", ".artifacts")):
            os.environ[var] = str(d / sub) if sub else str(d)
        import wandb

        self.run = wandb.init(
            project=project, group=group or None, name=name or None, id=run_id(name) if name else None,
            resume="allow", job_type=job_type, dir=str(d), mode=resolve_mode(mode), config=config or {},
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True, disable_git=True),
        )

    @property
    def directory(self) -> str | None:
        return self.run.dir if self.run is not None else None

    def log(self, metrics: dict, step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self, metrics: dict) -> None:
        if self.run is not None:
            self.run.summary.update(metrics)

    def log_artifact(self, path: str | Path, name: str, metadata: dict | None = None) -> None:
        """The exported codec artifact directory as a W&B model artifact."""
        if self.run is None:
            return
        import wandb

        art = wandb.Artifact(re.sub(r"[^A-Za-z0-9._-]", "-", name), type="model", metadata=metadata or {})
        art.add_dir(str(path))
        self.run.log_artifact(art)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
