"""The main job, end to end on one machine: the whole platform on its embedded default.

    python -m pipeline                       # local Ray, bundled sample (data/sample), ~4 minutes on 2 cores
    python -m pipeline [--config FILE] [key=value ...] [--address ADDR] [--print-config]
    ray job submit --working-dir . -- python -m pipeline out=/mnt/shared/runs/pipeline   # on the cluster it joins

1. collect   an SQLite L2 store seeded with legacy stub blobs + the sample's train file -> Parquet dataset
2. tune      a tiny Ray Tune search (Train V2 trials) over families and latent sizes, timed against the budget;
             the winner's exported int8 artifact is a candidate
3. adapt     warm-start adaptation of the current version (`train/configs/finetune.yaml`, init_from = the
             registry's CURRENT) on the collected dataset: a 2-worker Ray Train job, QAT, int8 export
4. gate      every candidate on the test split: the real gates (nbmf bench's, unchanged) AND at least as good as
             the current version on the same records (tune.register.register_gated); a candidate that earns it is
             registered as the next version of a run-local copy of the model registry (models/ is untouched)
5. serve     the Ray Serve app; sample records encoded and decoded over HTTP. The current version stays current;
             the best registered candidate, if any earned it, becomes the canary; none earned: no canary
6. report    what was decided and why (report.json "decisions"), `nbmf bench` on the sample's val records (legacy
             stub, stub, zstd-dict, brotli, every version), plots; everything under runs/pipeline/<UTC time>/
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """The main job's settings: ``--config FILE`` (YAML of these fields) and ``key=value`` overrides. Relative paths
    are the repository's (under ``ray job submit --working-dir .``, the job's uploaded copy of it); outside data,
    and ``out`` of a submitted job must be absolute (train.storage.path_problems says so)."""

    sample: str = "data/sample"  # corpus-format train.jsonl + val.jsonl
    models: str = "models"  # released registry, copied into the run
    out: str = "runs/pipeline"  # runs directory: a new UTC-stamped run inside
    tune_config: str = "tune/configs/tiny.yaml"
    adapt_config: str = "train/configs/finetune.yaml"
    adapt_minutes: float = 1.0  # training minutes of the warm-start adaptation (its schedule's length)
    test_records: int = 0  # 0 = the dataset's whole test split, for every gate decision
    http_records: int = 120  # sample val records sent through the HTTP endpoint
    canary_share: float = 0.25  # share of encodes routed to the newly registered version
    bench_records: int = 0  # 0 = every sample val record
    skip_training: bool = False  # no collect/tune/adapt/gate: serve and bench the released model

    def path(self, field: str) -> Path:
        """``field``'s location: an absolute path as given, a relative one inside the repository."""
        p = Path(getattr(self, field)).expanduser()
        return p if p.is_absolute() else ROOT / p


def say(console, stage: str, text: str) -> None:
    console.print(f"[bold cyan]{stage:>9}[/] {text}")


def seed_l2_store(path: Path, records: list[dict]) -> dict:
    """An L2 store as the old service left it: legacy stub blobs (lossless and some semantic)."""
    from nbmf.bench.anchors import legacy_blob
    from nbmf.data.store import SQLiteL2Store

    store = SQLiteL2Store(path)
    counts = {"lossless": 0, "semantic": 0}
    for i, r in enumerate(records):
        fidelity = "semantic" if i % 5 == 4 else "lossless"
        blob = json.dumps(legacy_blob(r["data"], fidelity), ensure_ascii=False).encode("utf-8")
        store.put(f"l2-{i}", blob, domain=r.get("domain", "general"), record_class=r.get("type", ""), encoder_version="legacy")
        counts[fidelity] += 1
    store.close()
    return counts


def stage_collect(cfg: PipelineConfig, run: Path, console) -> Path:
    from nbmf.data.collect import CollectConfig, collect
    from nbmf.data.corpus import read_corpus

    l2 = run / "l2.sqlite"
    seeded = seed_l2_store(l2, read_corpus(cfg.path("sample") / "train.jsonl", limit=300))
    say(console, "collect", f"L2 store seeded with legacy blobs: {seeded}")
    manifest = collect(CollectConfig(sources=(str(cfg.path("sample") / "train.jsonl"), str(cfg.path("sample") / "val.jsonl"), f"l2://{l2}"),
                                     out=run / "dataset", fractions=(0.8, 0.1, 0.1), progress=False))
    say(console, "collect", f"dataset {run / 'dataset'}: {json.dumps(manifest.get('counts', {}))[:200]}")
    return run / "dataset"


def stage_tune(cfg: PipelineConfig, run: Path, dataset: Path, console) -> tuple[dict, list[dict], object]:
    from train.config import TrainJobConfig
    from train.driver import prepare
    from train.jobconfig import load_config
    from tune import config as tcfg
    from tune import results
    from tune.driver import search

    tune_cfg = tcfg.load(str(ROOT / cfg.tune_config), [f"search.storage_path={run / 'tune'}", "search.name=search"])
    base = load_config(TrainJobConfig, str(ROOT / tune_cfg.train),
                       list(tune_cfg.train_overrides) + [f"data.source={dataset}", f"run.storage_path={run / 'train'}"])
    prepared = prepare(dataclasses.replace(base, export=dataclasses.replace(base.export, bench_records=tune_cfg.objective.records)))
    out = run / "tune"
    rows, winner = search(tune_cfg, base, "search", storage=str(out), prepared=prepared, out_dir=out)
    results.write_json({"trials": rows, "winner": winner and winner["trial"]}, out / "results.json")
    if winner is None:
        say(console, "tune", "no trial was eligible (see the table): no search candidate")
    else:
        say(console, "tune", f"winner {winner['trial']}: {winner['params']}, ratio {winner['ratio']:.2f} on "
                             f"{tune_cfg.objective.records} val records")
    return winner, rows, (tune_cfg, base)


def winner_artifact(winner: dict, run: Path) -> Path:
    """The search winner's exported int8 artifact, copied out of its final checkpoint."""
    from ray.train import Checkpoint

    from train.checkpoint import ARTIFACT

    dest = run / "candidates" / "search-winner"
    with Checkpoint(winner["checkpoint"]).as_directory() as d:
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(Path(d) / ARTIFACT, dest)
    return dest


def stage_adapt(cfg: PipelineConfig, run: Path, dataset: Path, console) -> Path:
    """The current version, warm-started and adapted to the collected dataset for ``adapt_minutes``."""
    from nbmf.modeldir import current
    from train.config import load
    from train.driver import run_training

    registry = run / "registry"
    base = current(registry)
    if base is None:
        raise SystemExit(f"adapt: the registry {registry} has no current version to adapt")
    overrides = [f"data.source={dataset}", f"init_from={registry / base}", f"run.max_minutes={cfg.adapt_minutes:g}",
                 f"run.storage_path={run / 'train'}", "run.name=adapt"]
    job = load(str(ROOT / cfg.adapt_config), overrides)
    summary = run_training(job, name="adapt", command=" ".join(
        ["python -m train --config", cfg.adapt_config, *overrides]))
    m = summary["metrics"]
    say(console, "adapt", f"{base} warm-started, {m.get('trained_s', 0):.0f} s of training on 2 workers: step "
                          f"{m.get('step')}, val {m.get('val_bpb', float('nan')):.3f} bits/byte -> {summary['artifact']}")
    if not summary["artifact"]:
        raise SystemExit("adapt: the run exported no artifact")
    return Path(summary["artifact"])


def stage_gate(cfg: PipelineConfig, run: Path, candidates: dict[str, Path], console) -> dict:
    """Gate each candidate against the real gates and the current version on the test split; register those that
    earn it (CURRENT unchanged). The canary is the registered candidate with the best test ratio, or None."""
    from train.data import iter_rows, resolve_source
    from tune.register import register_gated

    test_rows = list(iter_rows(resolve_source(run / "dataset"), "test", cfg.test_records))
    decisions, best = [], None
    for name, artifact in candidates.items():
        outcome = register_gated(artifact, run / "registry", test_rows, None, staging=run / "staged" / name,
                                 set_current=False)
        for g in outcome["gates"]:
            say(console, "gate", f"{name}: {'PASS' if g['passed'] else 'FAIL'} {g['gate']}: {g['metric']} = "
                                 f"{g['value']:.4g} (needs {g['op']} {g['threshold']:.4g})")
        decision = {"candidate": name, "artifact": str(artifact), "registered": outcome["registered"],
                    "version": outcome.get("version"), "reason": outcome["reason"],
                    "test_ratio": outcome["test"].get("ratio"), "current": outcome["current"],
                    "current_test_ratio": (outcome["current_test"] or {}).get("ratio"), "gates": outcome["gates"]}
        decisions.append(decision)
        if outcome["registered"] and (best is None or decision["test_ratio"] > best["test_ratio"]):
            best = decision
        say(console, "register", f"{name}: " + (f"registered as {outcome['version']} (CURRENT stays "
                                                f"{outcome['current']})" if outcome["registered"] else "not registered")
            + f": {outcome['reason']}")
    canary = best["version"] if best else None
    say(console, "decide", f"canary: {canary} ({best['candidate']}, {cfg.canary_share:.0%} of encodes)" if best
        else "no canary: no candidate earned it; the current version serves every encode")
    return {"test_records": len(test_rows), "decisions": decisions, "canary": canary}


def stage_serve(cfg: PipelineConfig, run: Path, candidate: str | None, console) -> dict:
    import httpx
    from ray import serve

    from nbmf.bench.metrics import percentile
    from nbmf.data.corpus import read_corpus
    from serve.app import build_app
    from serve.args import AppArgs

    registry = run / "registry"
    args = AppArgs(model_dir=str(registry), candidate=candidate, canary_share=cfg.canary_share if candidate else 0.0)
    t0 = time.time()
    serve.run(build_app(args), name="nbmf", route_prefix="/", blocking=False)
    say(console, "serve", f"app healthy in {time.time() - t0:.1f} s: {args.model_dump(include={'current', 'candidate', 'canary_share'})}")
    records = read_corpus(cfg.path("sample") / "val.jsonl", limit=cfg.http_records)
    lat_enc, lat_dec, versions, exact = [], [], {}, 0
    with httpx.Client(base_url="http://127.0.0.1:8000", timeout=30) as client:
        client.get("/healthz").raise_for_status()
        for i, r in enumerate(records):
            t = time.perf_counter()
            enc = client.post("/v1/encode", json={"payload": r["data"], "record_id": r["id"]})
            lat_enc.append(time.perf_counter() - t)
            enc.raise_for_status()
            writer = enc.headers["x-nbmf-encoder"]  # the body is the blob's JSON envelope
            versions[writer] = versions.get(writer, 0) + 1
            t = time.perf_counter()
            dec = client.post("/v1/decode", json=enc.json())
            lat_dec.append(time.perf_counter() - t)
            dec.raise_for_status()
            exact += dec.json()["payload"] == r["data"]
        held = client.get("/v1/versions").json()
    out = {"records": len(records), "exact": exact, "written_by": versions, "service_versions": held,
           "encode_ms_p50": 1e3 * percentile(lat_enc, 50), "encode_ms_p95": 1e3 * percentile(lat_enc, 95),
           "decode_ms_p50": 1e3 * percentile(lat_dec, 50), "decode_ms_p95": 1e3 * percentile(lat_dec, 95)}
    say(console, "serve", f"HTTP: {exact}/{len(records)} exact; blobs by version {versions}; encode p95 "
                          f"{out['encode_ms_p95']:.1f} ms, decode p95 {out['decode_ms_p95']:.1f} ms")
    return out


def stage_report(cfg: PipelineConfig, run: Path, console) -> dict:
    from nbmf.bench import report
    from nbmf.bench.run import BenchConfig
    from nbmf.bench.run import run as bench_run
    from nbmf.registry import Registry

    result = bench_run(BenchConfig(input=cfg.path("sample") / "val.jsonl", limit=cfg.bench_records or None, progress=False),
                       registry=Registry(run / "registry"))
    report.print_report(result, console)
    report.write_json(result, run / "bench.json")
    report.write_plot(result, run / "bench.png")
    return result


def main(argv=None) -> int:
    from rich.console import Console

    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML of PipelineConfig fields (default: the embedded defaults, "
                   "pipeline/configs/local.yaml spells them out)")
    p.add_argument("--address", default="", help="Ray cluster to use: default joins the cluster of a submitted job "
                   "(or RAY_ADDRESS), else starts a private local one; 'local' always a private one; or an address")
    p.add_argument("--skip-training", action="store_true", help="no tune/adapt/register: serve and bench the released "
                   "model (the same as skip_training=true)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. adapt_minutes=2 http_records=40 "
                   "out=/abs/runs")
    a = p.parse_args(argv)
    from train.jobconfig import ConfigError, dump_yaml, load_config
    from train.storage import is_uri, path_problems, submitted_job

    try:
        cfg = load_config(PipelineConfig, a.config, a.overrides + (["skip_training=true"] if a.skip_training else []))
        problems = [f"{k}: {v!r} is a URI; the main job works in local directories (its SQLite store, Serve's "
                    "registry, plots): pass a path, absolute in a submitted job"
                    for k, v in (("out", cfg.out), ("models", cfg.models), ("sample", cfg.sample)) if is_uri(v)]
        problems += path_problems(outputs={"out": cfg.out}, inputs={"sample": cfg.sample, "models": cfg.models})
        if problems:
            raise ConfigError(problems, a.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    if a.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    address = a.address or ("" if submitted_job() is not None or os.environ.get("RAY_ADDRESS") else "local")
    console = Console()
    quiet = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "WANDB_MODE": "offline",
             "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}  # per-shard bars would drown the stage lines
    for k, v in quiet.items():
        os.environ.setdefault(k, v)
    run = (cfg.path("out") / time.strftime("%Y%m%d-%H%M%S", time.gmtime())).resolve()
    run.mkdir(parents=True)
    shutil.copytree(cfg.path("models"), run / "registry", ignore=shutil.ignore_patterns(".lock", "*.tmp"))
    say(console, "start", f"run dir {run}; registry copied from {cfg.path('models')} (current: {(run / 'registry' / 'CURRENT').read_text().strip()})")
    t0, times, summary = time.time(), {}, {"run": str(run)}
    import ray

    from train.driver import init_ray

    try:
        init_ray(address)
        if not cfg.skip_training:
            t = time.time()
            dataset = stage_collect(cfg, run, console)
            times["collect"] = time.time() - t
            t = time.time()
            winner, _, _ = stage_tune(cfg, run, dataset, console)
            times["tune"] = time.time() - t
            t = time.time()
            adapted = stage_adapt(cfg, run, dataset, console)
            times["adapt"] = time.time() - t
            t = time.time()
            candidates = {"adapted-current": adapted}
            if winner is not None:
                candidates = {"search-winner": winner_artifact(winner, run), **candidates}
            summary["gate"] = stage_gate(cfg, run, candidates, console)
            times["gate+register"] = time.time() - t
        t = time.time()
        candidate = summary.get("gate", {}).get("canary")
        summary["http"] = stage_serve(cfg, run, candidate, console)
        times["serve"] = time.time() - t
    finally:
        from ray import serve

        try:
            if address == "local":
                serve.shutdown()  # the private cluster's Serve, gone with it
            else:
                serve.delete("nbmf")  # a joined cluster's other Serve apps stay up
        finally:
            ray.shutdown()  # this driver's connection (a private cluster stops with it)
    t = time.time()
    bench = stage_report(cfg, run, console)
    times["report"] = time.time() - t
    summary["bench_codecs"] = [r["codec"] for r in bench.get("rows", [])] if isinstance(bench, dict) else []
    summary["seconds"] = {k: round(v, 1) for k, v in times.items()} | {"total": round(time.time() - t0, 1)}
    (run / "report.json").write_text(json.dumps(summary, indent=2, default=str))
    say(console, "done", f"{summary['seconds']['total']:.0f} s; report {run / 'report.json'}, plots {run / 'bench.png'}"
                         f"{', ' + str(run / 'tune' / 'pareto.png') if not cfg.skip_training else ''}")
    ok = summary["http"]["exact"] == summary["http"]["records"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
