"""The search driver: Optuna + ASHA over Ray Train trials, then objective, gates and registration.

    python -m tune --config tune/configs/tiny.yaml [key=value ...] [--resume] [--print-config]
    ray job submit --working-dir . -- python -m tune --config tune/configs/base.yaml \
        search.storage_path=s3://bucket/tune registry.dir=/mnt/shared/models

1. Tokenizers: one per searched vocabulary size, trained once here on the train split.
2. Search: each trial is a Ray Train run (tune/trial.py); ASHA stops weak trials on val bits/byte (their
   W&B runs are then finished here: ASHA kills a trial's workers before rank 0 can). At most
   search.max_concurrent_trials run at once: on an autoscaling cluster, trials waiting for GPUs make it add nodes.
   --resume continues an interrupted search (Tuner.restore) named by search.name.
3. Objective: every finished trial's exported artifact is sized and timed here, one at a time, on a
   fixed val record set through the real codec; decode p95 over the latency budget -> not eligible.
   The winner is the eligible trial with the best compression ratio.
4. The winner is re-exported under the registry's next version, validated against the gates on the
   test split, and registered (vN/ + CURRENT) only if every gate passes.
5. Results in the search dir: a table (terminal), results.csv, pareto.png and results.json (the
   whole report: every trial, the winner, its gate checks, what was registered or why not), and a
   search-level W&B run (job_type "search"): the trials table, Pareto plot, winner, gates, per-type test
   results, the zstd-dict and brotli anchors on the same test records, the registered version's artifact.

Exit status: 0 when a version was registered, 3 when the search ran but registered nothing (the
report says why), 2 for a bad config.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from nbmf.record import Record
from train import storage as st
from train.config import TrainJobConfig
from train.data import iter_rows
from train.driver import init_ray, prepare, train_tokenizer
from train.export import anchor_ratios
from train.jobconfig import ConfigError, dump_yaml, load_config, to_dict
from tune import config as tcfg
from tune import register, results
from tune.register import register_gated

HEAD_NODE = "node:__internal_head__"  # Ray's resource of the head node, 1.0 on every cluster's head


def max_concurrent(job: TrainJobConfig, asked: int) -> int:
    """Trials that fit the cluster at once: its CPUs (and GPUs) over one trial's workers' needs."""
    if asked > 0:
        return asked
    import ray

    total = ray.cluster_resources()
    res = job.scaling.resources_per_worker
    n = job.scaling.num_workers
    fits = [total.get("CPU", 0.0) // max(n * res.get("CPU", 1.0), 1e-9)]
    if job.scaling.use_gpu:
        fits.append(total.get("GPU", 0.0) // max(n * res.get("GPU", 1.0), 1e-9))
    return max(1, int(min(fits)))


def run_search(cfg: tcfg.TuneJobConfig, *, name: str, base: TrainJobConfig, prepared, storage: str,
               address: str = "", resume: bool = False):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from tune.trial import run_trial

    vocabs = tcfg.flat_space(cfg.space).get("model.vocab_size", {}).get("choice", [base.model.vocab_size])
    tokenizers = {int(v): train_tokenizer(prepared.source, int(v), base.data.tokenizer_records).to_json()
                  for v in vocabs}
    init_ray(address)
    concurrent = max_concurrent(base, cfg.search.max_concurrent_trials)
    epochs = base.optim.epochs
    print(f"search {name}: {cfg.search.num_samples} trials, {concurrent} at a time, {epochs} epochs each"
          + (" (resumed)" if resume else ""), flush=True)
    trainable = tune.with_parameters(run_trial, base=to_dict(base), tokenizers=tokenizers, prepared=prepared,
                                     search=name, runs_storage=st.join(storage, name, "runs"))
    # The trial function only drives a TorchTrainer: it holds no CPU (RAY-HERE.md). It runs on the head node, where
    # this driver prepared the data (a remote source's cached copy, a head-local corpus): a sliver of Ray's
    # built-in head-node resource keeps it there while its Train workers go to the GPU nodes.
    trainable = tune.with_resources(trainable, {"CPU": 0, "memory": 1 << 20, HEAD_NODE: 0.001})
    experiment = st.join(storage, name)
    if resume:
        # The searcher, scheduler and trial states come back from the experiment's state; unfinished and
        # errored trials continue from their latest Train checkpoint.
        return tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=True,
                                  param_space=tcfg.tune_space(cfg.space)).fit()
    scheduler = ASHAScheduler(time_attr="epoch", max_t=epochs + 1, grace_period=min(cfg.search.grace_period, epochs),
                              reduction_factor=cfg.search.reduction_factor)
    tuner = tune.Tuner(
        trainable,
        param_space=tcfg.tune_space(cfg.space),
        # max_concurrent_trials wraps the searcher in Tune's ConcurrencyLimiter.
        tune_config=tune.TuneConfig(metric=cfg.search.metric, mode="min", search_alg=OptunaSearch(seed=cfg.search.seed),
                                    scheduler=scheduler, num_samples=cfg.search.num_samples,
                                    max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(name=name, storage_path=storage),
    )
    return tuner.fit()


def _checkpoint_uri(path: str | None, storage: str) -> str | None:
    """Train reports checkpoint paths without the storage's scheme (s3://...); put it back."""
    if not path or not st.is_uri(storage) or "://" in path:
        return path
    return storage.split("://", 1)[0] + "://" + path.lstrip("/")


def trial_rows(grid, space: dict, storage: str = "") -> list[dict]:
    """One row per trial from the ResultGrid: params, status, last metrics, artifact location."""
    rows = []
    for res in grid:
        m = res.metrics or {}
        params = {k: (v.item() if hasattr(v, "item") else v) for k, v in (res.config or {}).items() if k in space}
        done = bool(m.get("final"))  # not "done": Tune sets that when a trial stops for any reason
        if res.error is not None:
            status, note = "error", f"{type(res.error).__name__}: {str(res.error).splitlines()[0][:160]}"
        elif done:
            status, note = "finished", ""
        else:
            status, note = "stopped", "stopped early by ASHA"
        ckpt = _checkpoint_uri(m.get("checkpoint_path"), storage) if done else None
        rows.append({
            "trial": m.get("trial_id") or Path(res.path).name,
            "family": params.get("model.family"), "d_model": params.get("model.d_model"),
            "n_layers": params.get("model.n_layers"), "vocab_size": params.get("model.vocab_size"),
            "lr": params.get("optim.lr"), "params": params, "status": status, "epochs": m.get("epoch"),
            "val_bpb": m.get("val_bpb"), "checkpoint": ckpt, "note": note,
            "ratio": None, "decode_ms_p95": None, "eligible": False, "winner": False,
        })
    return sorted(rows, key=lambda r: str(r["trial"]))


def evaluate(rows: list[dict], objective: tcfg.ObjectiveConf, records: list[Record]) -> None:
    """Size and time every finished trial's artifact on the same records, one trial at a time."""
    from ray.train import Checkpoint

    from train.checkpoint import ARTIFACT
    from train.export import measure_artifact

    for r in rows:
        if r["status"] != "finished" or not r["checkpoint"]:
            continue
        with Checkpoint(r["checkpoint"]).as_directory() as d:
            art = Path(d) / ARTIFACT
            if not art.is_dir():
                r["note"] = "no exported artifact in the final checkpoint"
                continue
            m = measure_artifact(art, records, repeats=objective.repeats)
        r.update(ratio=m.get("ratio"), decode_ms_p95=m.get("decode_ms_p95"), exact_rate=m.get("exact_rate"),
                 fallbacks=m.get("fallbacks"))
        if m.get("exact_rate") != 1.0 or m.get("errors"):
            r["note"] = "not exact on the record set"
        elif m["decode_ms_p95"] > objective.latency_budget_ms:
            r["note"] = f"over the latency budget ({m['decode_ms_p95']:.1f} > {objective.latency_budget_ms:g} ms)"
        else:
            r["eligible"] = True


def choose(rows: list[dict]) -> dict | None:
    """The eligible trial with the best ratio (ties: lower latency)."""
    eligible = [r for r in rows if r["eligible"]]
    if not eligible:
        return None
    best = max(eligible, key=lambda r: (r["ratio"], -r["decode_ms_p95"]))
    best["winner"] = True
    return best


def finalize(winner: dict, cfg: tcfg.TuneJobConfig, test_rows: list[Record], out_dir: Path, *, search: str) -> dict:
    """Stage the winner's exported artifact (the one its trial wrote and the search measured: the training run's
    manifest, decode window and bench figures) with the search's fields, and hand it to ``register_gated``: gated
    on the test split, registered as the registry's next version if it passes."""
    from ray.train import Checkpoint

    from nbmf.artifact import relabel
    from train.checkpoint import ARTIFACT

    staged = out_dir / "winner" / "candidate"
    # labelled with the version free now (v1 for a remote registry); register_gated relabels it as the version it
    # is registered under
    label = "v1" if st.is_uri(cfg.registry.dir) else register.next_version(Path(cfg.registry.dir).resolve())
    with Checkpoint(winner["checkpoint"]).as_directory() as d:
        relabel(Path(d) / ARTIFACT, staged, label,
                metrics={"search_ratio": winner["ratio"], "search_decode_ms_p95": winner["decode_ms_p95"]},
                training={"search": search, "trial": winner["trial"], "params": winner["params"]})
    outcome = register_gated(staged, cfg.registry.dir, test_rows, cfg.gates.thresholds, staging=out_dir / "winner",
                             set_current=cfg.registry.set_current)
    return {"trial": winner["trial"], "staged": str(staged), **outcome}


def search(cfg: tcfg.TuneJobConfig, base: TrainJobConfig, name: str, *, storage: str, prepared, out_dir: Path,
           address: str = "", resume: bool = False) -> tuple[list[dict], dict | None]:
    """Steps 2-3 of the module doc: run the trials, measure every finished artifact, choose the winner (None
    when no trial is eligible). Writes results.csv and pareto.png to out_dir and prints the table."""
    grid = run_search(cfg, name=name, base=base, prepared=prepared, storage=storage, address=address, resume=resume)
    rows = trial_rows(grid, tcfg.flat_space(cfg.space), storage)
    finish_stopped_runs(rows, base, name, storage=storage, out_dir=out_dir)
    evaluate(rows, cfg.objective, prepared.bench_rows)
    winner = choose(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    results.write_csv(rows, out_dir / "results.csv")
    results.plot(rows, out_dir / "pareto.png", cfg.objective.latency_budget_ms)
    results.print_table(rows, f"search {name}: {len(rows)} trials")
    return rows, winner


def finish_stopped_runs(rows: list[dict], base: TrainJobConfig, name: str, *, storage: str, out_dir: Path) -> None:
    """Close the W&B run of every trial ASHA stopped (resumed by its id, summary status "stopped", exit 0).

    A trial's rank 0 logs into ``<storage>/<search>/runs/<trial>/wandb`` (train.driver.build_trainer); with remote
    storage the closing run is written here and copied there (train.wandb_logging)."""
    from train.wandb_logging import finish_stopped

    if not base.wandb.enabled:
        return
    runs = st.join(storage, name, "runs")
    for r in rows:
        if r["status"] != "stopped":
            continue
        trial = str(r["trial"])
        if base.wandb.dir:
            directory, sync_to = base.wandb.dir, ""
        elif st.is_uri(runs):
            directory, sync_to = str(out_dir / "wandb-stopped" / trial), st.join(runs, trial, "wandb")
        else:
            directory, sync_to = st.join(runs, trial, "wandb"), ""
        finish_stopped(name=trial, directory=directory, project=base.wandb.project, group=name, mode=base.wandb.mode,
                       sync_to=sync_to, summary={"stopped_by": "ASHA", "epochs": r.get("epochs"),
                                                 "val_bpb": r.get("val_bpb")})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML search preset, e.g. tune/configs/tiny.yaml")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted search named by search.name (same search.storage_path): "
                        "Tuner.restore; unfinished and errored trials continue from their checkpoints")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved search config and the training preset it starts from, and exit")
    p.add_argument("--address", default="", help="Ray cluster: default joins a running one (RAY_ADDRESS, a job's "
                   "cluster, `ray start` on this machine) or starts one; 'local' always starts a private one")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. search.num_samples=8")
    args = p.parse_args(argv)
    try:
        cfg = tcfg.load(args.config, args.overrides)
        base = load_config(TrainJobConfig, cfg.train, cfg.train_overrides)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_yaml(cfg), end="")
        print(f"# the training preset each trial starts from ({cfg.train} + train_overrides):")
        print("\n".join("# " + line for line in dump_yaml(base).splitlines()))
        return 0
    if args.resume and not cfg.search.name:
        print("--resume needs the search to continue: add search.name=<name> (see `ls <search.storage_path>`)",
              file=sys.stderr)
        return 2
    name = cfg.search.name or f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    report = search_and_register(cfg, base, name, address=args.address, resume=args.resume)
    return 0 if report["outcome"].get("registered") else 3


def search_and_register(cfg: tcfg.TuneJobConfig, base: TrainJobConfig, name: str, address: str = "",
                        resume: bool = False) -> dict:
    """The whole search (steps 1-5 of the module doc); returns the report also written to results.json."""
    base = dataclasses.replace(base, wandb=dataclasses.replace(base.wandb, group=name))
    storage = st.resolve(cfg.search.storage_path)
    if resume:
        from ray.tune import Tuner

        if not Tuner.can_restore(st.join(storage, name)):
            raise SystemExit(f"nothing to resume: no search {name!r} in {storage}")
    prepared = prepare(dataclasses.replace(base, export=dataclasses.replace(base.export,
                                                                            bench_records=cfg.objective.records)))
    # Results are written locally, then copied next to Tune's state when the storage is remote.
    out_dir = Path(tempfile.mkdtemp(prefix="nbmf-search-")) / name if st.is_uri(storage) else Path(storage) / name
    t0 = time.time()
    rows, winner = search(cfg, base, name, storage=storage, prepared=prepared, out_dir=out_dir, address=address,
                          resume=resume)
    test_rows = list(iter_rows(prepared.source, "test", cfg.gates.test_records))
    if winner is None:
        outcome = {"registered": False, "reason": "no finished trial was eligible: " + "; ".join(
            f"{r['trial']}: {r['note'] or r['status']}" for r in rows)}
    else:
        outcome = finalize(winner, cfg, test_rows, out_dir, search=name)
    references = anchor_ratios(test_rows, prepared.dictionary)
    report = {"search": name, "seconds": round(time.time() - t0, 1), "config": to_dict(cfg),
              "latency_budget_ms": cfg.objective.latency_budget_ms, "trials": rows, "winner": winner and winner["trial"],
              "references": references, "outcome": outcome}
    results.write_json(report, out_dir / "results.json")
    if base.wandb.enabled:
        results.log_search(report, out_dir, project=base.wandb.project, mode=base.wandb.mode,
                           directory=str(out_dir / "wandb"),
                           sync_to=st.join(storage, name, "wandb") if st.is_uri(storage) else "")
    if st.is_uri(storage):
        st.copy_dir(str(out_dir), st.join(storage, name))
    if outcome.get("registered"):
        print(f"registered {outcome['version']} (trial {outcome['trial']}) in {outcome['registry']}; "
              f"CURRENT = {outcome.get('current')}", flush=True)
    else:
        print(f"registered nothing: {outcome['reason']}", flush=True)
    where = st.join(storage, name) if st.is_uri(storage) else out_dir
    print(f"results: {where}/results.csv, results.json, pareto.png", flush=True)
    return report
