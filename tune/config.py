"""The search's config: which training preset each trial starts from, the space, objective, gates, registry.

The search space mirrors the TrainJobConfig tree (``model: {d_model: ...}``); each searched field
holds one distribution: ``{choice: [...]}``, ``{loguniform: [low, high]}``, ``{uniform: [low, high]}``
or ``{randint: [low, high]}`` (high exclusive). ``model.vocab_size`` must be a ``choice``: the driver
trains one tokenizer per value. Overrides reach into it: ``space.model.d_model.choice=[64,128]``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from train.jobconfig import ConfigError, from_dict, load_config

DISTRIBUTIONS = ("choice", "loguniform", "uniform", "randint")


@dataclass(frozen=True)
class SearchConf:
    name: str = ""  # "" -> "<preset>-<UTC time>": the Tune experiment, the W&B group
    storage_path: str = "runs/tune"  # local dir (made absolute) or URI (s3://, gs://): Tune state, trial runs, results
    num_samples: int = 4  # trials
    # Trials running at once (Tune's max_concurrent_trials). On an autoscaling cluster set it: trials waiting
    # for GPUs are what makes the autoscaler add nodes. 0 = as many as the cluster's CPUs/GPUs fit right now
    # (per-trial workers x resources): right for a fixed cluster or one machine, 1 on a cluster at rest.
    max_concurrent_trials: int = 0
    seed: int = 0  # Optuna sampler seed
    metric: str = "val_bpb"  # ASHA and Optuna minimize validation bits per byte
    grace_period: int = 1  # epochs every trial gets before ASHA may stop it
    reduction_factor: float = 2.0  # ASHA keeps the best 1/reduction_factor at each rung


@dataclass(frozen=True)
class ObjectiveConf:
    latency_budget_ms: float = 120.0  # decode p95 per record on the fixed set; over it -> not eligible
    records: int = 64  # fixed record set: the first N val records
    repeats: int = 3  # decode timings per record (best kept): less noise from a busy machine


@dataclass(frozen=True)
class GateConf:
    # Threshold overrides by nbmf.bench gate metric (ratio_mean, ratio_p5, ratio_min, exact_rate,
    # encode_ms_p95, decode_ms_p95); {} keeps the seed's gates exactly as `nbmf bench` checks them.
    thresholds: dict[str, float] = field(default_factory=dict)
    test_records: int = 0  # 0 = the whole test split


@dataclass(frozen=True)
class RegistryConf:
    # Model registry: vN/ artifact dirs + CURRENT (docs/ARCHITECTURE.md); a local dir (on a cluster: one every node
    # and Serve mount, e.g. EFS) or a URI (s3://, gs://: mirrored, see tune.driver.register_gated).
    dir: str = "models"
    set_current: bool = True  # point CURRENT at the newly registered version


@dataclass(frozen=True)
class TuneJobConfig:
    train: str = "train/configs/tiny.yaml"  # training preset every trial starts from
    train_overrides: list[str] = field(default_factory=list)  # dotted overrides on that preset
    space: dict[str, Any] = field(default_factory=dict)  # nested like TrainJobConfig; leaves are distributions
    search: SearchConf = field(default_factory=SearchConf)
    objective: ObjectiveConf = field(default_factory=ObjectiveConf)
    gates: GateConf = field(default_factory=GateConf)
    registry: RegistryConf = field(default_factory=RegistryConf)


def flat_space(space: dict, prefix: str = "") -> dict[str, dict]:
    """``{model: {d_model: {choice: [..]}}}`` -> ``{"model.d_model": {"choice": [..]}}``."""
    out = {}
    for key, value in space.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and not set(value) <= set(DISTRIBUTIONS):
            out.update(flat_space(value, path + "."))
        else:
            out[path] = value
    return out


def _space_problems(space: dict, base: dict, base_overrides: list[str]) -> list[str]:
    """Every sampled value must make a valid training config on top of the preset."""
    from train.config import TrainJobConfig

    problems = []
    for key, spec in space.items():
        where = f"space.{key}"
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            problems.append(f"{where}: exactly one of {{{', '.join(d + ': ...' for d in DISTRIBUTIONS)}}}")
            continue
        dist, arg = next(iter(spec.items()))
        if dist == "choice" and not (isinstance(arg, list) and arg):
            problems.append(f"{where}.choice: a non-empty list")
            continue
        if dist != "choice" and not (isinstance(arg, list) and len(arg) == 2
                                     and all(isinstance(x, (int, float)) for x in arg) and arg[0] < arg[1]):
            problems.append(f"{where}.{dist}: [low, high] with low < high")
            continue
        if key == "model.vocab_size" and dist != "choice":
            problems.append(f"{where}: must be a choice (one tokenizer is trained per value)")
        samples = arg if dist == "choice" else arg[:1]
        for value in samples:
            try:
                from_dict(TrainJobConfig, base, [*base_overrides, f"{key}={json.dumps(value)}"])
            except ConfigError as e:
                problems.extend(f"{where}: {p}" for p in e.problems)
    return problems


def load(path=None, overrides=()) -> TuneJobConfig:
    import yaml

    from train.config import TrainJobConfig

    cfg = load_config(TuneJobConfig, path, overrides)
    train_cfg = load_config(TrainJobConfig, cfg.train, cfg.train_overrides)  # the preset itself must be valid
    base = yaml.safe_load(open(cfg.train, encoding="utf-8")) or {}
    problems = _space_problems(flat_space(cfg.space), base, cfg.train_overrides)
    if not cfg.space:
        problems.append("space: empty (name at least one field to search)")
    from nbmf.bench.metrics import GATES

    known = {g.metric for g in GATES if g.fidelity in ("both", "lossless")}
    problems += [f"gates.thresholds.{k}: unknown gate metric (known: {', '.join(sorted(known))})"
                 for k in cfg.gates.thresholds if k not in known]
    if cfg.search.max_concurrent_trials < 0:
        problems.append("search.max_concurrent_trials: 0 (from the cluster's resources) or more")
    from train.storage import path_problems

    problems += path_problems(outputs={"search.storage_path": cfg.search.storage_path,
                                       "registry.dir": cfg.registry.dir},
                              inputs={"train_overrides: data.source": train_cfg.data.source})
    if problems:
        raise ConfigError(problems, str(path) if path else None)
    return cfg


def tune_space(space: dict) -> dict:
    """The YAML space as Ray Tune distributions (OptunaSearch converts them)."""
    from ray import tune

    make = {"choice": lambda a: tune.choice(a), "loguniform": lambda a: tune.loguniform(*a),
            "uniform": lambda a: tune.uniform(*a), "randint": lambda a: tune.randint(*a)}
    return {key: make[dist](arg) for key, spec in flat_space(space).items() for dist, arg in spec.items()}


def trial_overrides(params: dict) -> list[str]:
    """A trial's sampled values as dotted overrides on the training preset."""
    return [f"{k}={json.dumps(v.item() if hasattr(v, 'item') else v)}" for k, v in sorted(params.items())]
