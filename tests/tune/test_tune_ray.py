"""A real 4-trial search (Optuna + ASHA over Ray Train trials) on the session's local head node."""
import csv
import dataclasses
import json
from pathlib import Path

import pytest

from tune import config as tcfg
from tune import register

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tune" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def search(ray_head, tmp_path_factory):
    """`python -m tune` on the session's head node: exit 0 means a version was registered."""
    from helpers.ray_jobs import run_module

    d = tmp_path_factory.mktemp("tune")
    args = ["--config", "tune/configs/tiny.yaml", "search.name=s4", f"search.storage_path={d}",
            f"registry.dir={d / 'registry'}", "search.max_concurrent_trials=2"]
    p = run_module("tune", args, head=ray_head, cwd=REPO, timeout=560)
    report = json.loads((d / "s4" / "results.json").read_text()) if (d / "s4" / "results.json").exists() else None
    assert report is not None, (p.stdout[-3000:], p.stderr[-5000:])
    return tcfg.load(TINY, args[2:]), d, report, p


def test_a_four_trial_search_registers_a_version(search):
    from nbmf.codecs.neural import load_codec

    cfg, d, report, p = search
    assert p.returncode == 0, report["outcome"]
    trials = report["trials"]
    assert len(trials) == 4
    finished = [t for t in trials if t["status"] == "finished"]
    assert finished, [t["note"] for t in trials]
    assert all(t["ratio"] > 0 and t["decode_ms_p95"] > 0 for t in finished)
    out = report["outcome"]
    assert out["registered"], out
    winner = next(t for t in trials if t["winner"])
    assert winner["ratio"] == max(t["ratio"] for t in trials if t["eligible"])
    reg = d / "registry"
    assert register.versions(reg) == [out["version"]] == ["v1"] and register.current(reg) == "v1"
    codec = load_codec(reg / "v1")
    assert codec.name == "v1"
    manifest = json.loads((reg / "v1" / "manifest.json").read_text())
    assert manifest["training"]["trial"] == winner["trial"] and manifest["metrics"]["test_exact_rate"] == 1.0
    # the trial's own export, as every training run writes it (train.export.provenance), plus the search's fields
    assert manifest["training"]["commands"] and manifest["training"]["config"]["model"]["family"] == winner["family"]
    assert manifest["metrics"]["search_ratio"] == winner["ratio"] and "ratio" in manifest["metrics"]
    assert all(g["passed"] for g in out["gates"])

    results = d / "s4"
    rows = list(csv.DictReader(open(results / "results.csv")))
    assert len(rows) == 4 and {r["trial"] for r in rows} == {t["trial"] for t in trials}
    assert json.loads((results / "results.json").read_text())["outcome"]["version"] == "v1"
    assert (results / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_each_trial_is_a_wandb_run_grouped_by_the_search(search):
    from helpers.ray_jobs import read_wandb_run

    _, d, report, _ = search
    for t in report["trials"]:
        if t["status"] == "finished":
            run = read_wandb_run(d / "s4" / "runs" / t["trial"] / "wandb")
            assert {r["group"] for r in run["runs"]} == {"s4"}
            assert any("val_bits_per_byte" in h for h in run["history"])


def test_a_winner_that_fails_a_gate_registers_nothing(search, tmp_path):
    from train.data import iter_rows, resolve_source
    from tune.driver import finalize

    cfg, d, report, _ = search
    winner = next(t for t in report["trials"] if t["winner"])
    strict = dataclasses.replace(cfg, gates=tcfg.GateConf(thresholds={"ratio_mean": 1000.0}, test_records=16))
    reg = d / "registry"
    before = sorted(p.name for p in reg.iterdir())
    test_rows = list(iter_rows(resolve_source(REPO / "data" / "sample"), "test", 16))
    outcome = finalize(winner, strict, test_rows, tmp_path, search="s4")
    assert not outcome["registered"]
    assert "mean ratio" in outcome["reason"] and "1000" in outcome["reason"]
    assert sorted(p.name for p in reg.iterdir()) == before and register.current(reg) == "v1"


def test_concurrency_comes_from_the_config(search):
    _, _, _, p = search
    assert "4 trials, 2 at a time" in p.stdout


def test_trials_stopped_by_asha_have_finished_wandb_runs(search):
    from helpers.ray_jobs import read_wandb_run

    _, d, report, _ = search
    stopped = [t for t in report["trials"] if t["status"] == "stopped"]
    for t in stopped:
        run = read_wandb_run(d / "s4" / "runs" / t["trial"] / "wandb")
        assert run["summary"]["status"] == "stopped" and run["summary"]["stopped_by"] == "ASHA"
        assert run["exit_codes"] and run["exit_codes"][-1] == 0
        assert {r["id"] for r in run["runs"]} == {t["trial"]}


def test_the_search_run_holds_trials_winner_gates_anchors_and_the_registered_version(search):
    from helpers.ray_jobs import read_wandb_run

    _, d, report, _ = search
    run = read_wandb_run(d / "s4" / "wandb")
    assert [r["name"] for r in run["runs"]] == ["s4-search"] and run["runs"][0]["group"] == "s4"
    s = run["summary"]
    assert s["search/trials/_type"] == "table-file" and s["search/trials/nrows"] == 4
    assert s["search/gates/_type"] == "table-file" and s["search/test_by_type/_type"] == "table-file"
    assert s["search/pareto/_type"] == "image-file"
    assert s["winner"] == report["winner"] and s["version"] == "v1" and s["registered"] is True
    refs = report["references"]
    assert set(refs) == {"zstd-19-dict", "brotli-11"} and all(v > 1.0 for v in refs.values())
    assert s["reference/zstd-19-dict_ratio"] == refs["zstd-19-dict"]
    assert s["reference/vs_brotli-11"] == report["outcome"]["test"]["ratio"] / refs["brotli-11"]
    codec = [a for a in run["artifacts"] if a["name"] == "nbmf-codec"]
    assert len(codec) == 1 and {"v1", "candidate", "production"} <= set(codec[0]["aliases"])
    assert s["registered/aliases"] == ["v1", "candidate", "production"] and s["registered/linked"] is False
    assert run["stats"] >= 1 and run["exit_codes"] == [0]
    files = Path(run["files"][0]).parent / "files"
    table = json.loads(next((files / "media" / "table" / "search").glob("trials_*.table.json")).read_text())
    assert len(table["data"]) == 4 and table["columns"][0] == "trial"


def test_resume_restores_the_search_and_finishes_its_steps(search, ray_head):
    """`--resume` on the search (Tuner.restore): the same trials come back (nothing re-trained: all are done),
    and the objective, gates and registration run again, here into a fresh registry. Runs last: it adds runs."""
    from helpers.ray_jobs import run_module

    _, d, report, _ = search
    args = ["--config", "tune/configs/tiny.yaml", "--resume", "search.name=s4", f"search.storage_path={d}",
            f"registry.dir={d / 'registry2'}", "search.max_concurrent_trials=2"]
    p = run_module("tune", args, head=ray_head, cwd=REPO, timeout=400)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    assert "(resumed)" in p.stdout
    again = json.loads((d / "s4" / "results.json").read_text())
    assert {t["trial"]: t["status"] for t in again["trials"]} == {t["trial"]: t["status"] for t in report["trials"]}
    assert register.versions(d / "registry2") == ["v1"]
