"""One Tune trial = one Ray Train run (Train V2): a function trainable that builds and fits a TorchTrainer.

Metrics reach Tune through ``TuneReportCallback`` (rank 0's reports: ``epoch``, ``val_bpb``, and at
the end ``done`` with the exported artifact's bench numbers and ``checkpoint_path``).
"""
from __future__ import annotations

from pathlib import Path


def run_trial(params: dict, *, base: dict, tokenizers: dict, prepared, search: str, runs_storage: str) -> None:
    """``params``: sampled values by dotted field; ``tokenizers``: {asked vocab_size: tokenizer JSON}."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from nbmf.tokenizer import Tokenizer
    from train.config import TrainJobConfig
    from train.driver import build_trainer, local_run_dir, with_vocab
    from train.jobconfig import from_dict
    from tune.config import trial_overrides

    cfg = from_dict(TrainJobConfig, base, trial_overrides(params))
    tok_json = tokenizers[cfg.model.vocab_size]
    cfg = with_vocab(cfg, Tokenizer.from_json(tok_json).vocab_size)
    name = ray.tune.get_context().get_trial_id()
    local = local_run_dir(runs_storage, name)
    Path(local).mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(cfg, name=name, storage=runs_storage, tokenizer_json=tok_json, prepared=prepared,
                            wandb_group=search, callbacks=[TuneReportCallback()], marker_dir=local)
    trainer.fit()
