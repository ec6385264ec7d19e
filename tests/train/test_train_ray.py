"""Real Ray Train runs on the session's local head node: tiny model, bundled sample, 2 CPU workers."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]


def train(head, storage: Path, name: str, *overrides: str) -> dict:
    """`python -m train` on the session's head node; the run's result.json."""
    from helpers.ray_jobs import run_module

    p = run_module("train", ["--config", "train/configs/tiny.yaml", f"run.storage_path={storage}",
                             f"run.name={name}", *overrides], head=head, cwd=REPO)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-5000:])
    return json.loads((storage / name / "result.json").read_text())


def _state(summary) -> dict:
    return json.loads((Path(summary["checkpoint"]) / "state.json").read_text())


@pytest.fixture(scope="module")
def trained(ray_head, tmp_path_factory):
    """The 2-worker tiny run, submitted as a job to the head node exactly as users submit it."""
    from helpers.ray_jobs import ray_env

    storage = tmp_path_factory.mktemp("runs")
    ray = str(Path(sys.executable).parent / "ray")
    cmd = [ray, "job", "submit", "--address", ray_head.dashboard_url, "--working-dir", ".", "--",
           "python", "-m", "train", "--config", "train/configs/tiny.yaml", f"run.storage_path={storage}",
           "run.name=two-workers"]
    job = subprocess.run(cmd, cwd=REPO, env=ray_env(), capture_output=True, text=True, timeout=400)
    result = storage / "two-workers" / "result.json"
    return storage, json.loads(result.read_text()) if result.exists() else None, job


def test_a_job_submitted_to_the_head_node_succeeds(trained):
    _, summary, job = trained
    assert job.returncode == 0, (job.stdout[-4000:], job.stderr[-4000:])
    assert "succeeded" in (job.stdout + job.stderr).lower()
    assert summary["metrics"]["final"] and summary["metrics"]["step"] == summary["metrics"]["total_steps"]


def test_two_worker_training_completes_and_its_artifact_round_trips(trained):
    from nbmf.artifact import read_manifest
    from nbmf.blob import peek_header
    from nbmf.data.corpus import iter_records
    from nbmf.payload import from_raw
    from train.export import registry_with

    storage, summary, job = trained
    assert job.returncode == 0, job.stderr[-4000:]
    m = summary["metrics"]
    assert m["final"] and m["step"] == m["total_steps"] > 0 and m["resumed_from"] == []
    state = _state(summary)
    losses = [h["loss_bits_per_token"] for h in state["history"] if "loss_bits_per_token" in h]
    assert losses[-1] < losses[0] - 0.5  # it learned something
    assert 0 < m["val_bpb"] < 8

    artifact = Path(summary["artifact"])
    manifest = read_manifest(artifact)  # verifies every file's sha256
    metrics = manifest["metrics"]
    assert metrics["val_bits_per_byte"] == pytest.approx(m["val_bpb"])
    assert metrics["exact_rate"] == 1.0 and metrics["ratio"] > 1.0 and metrics["decode_ms_p95"] > 0
    assert m["bench_ratio"] == pytest.approx(metrics["ratio"])
    assert manifest["training"]["workers"] == 2 and manifest["training_data"].startswith("sha256:")

    assert manifest["fallback"]["dictionary"] == "zstd.dict"  # the export ships its zstd fallback's dictionary
    reg, version = registry_with(artifact)
    versioned = 0
    for rec in iter_records(REPO / "data" / "sample" / "val.jsonl", limit=12):
        payload = from_raw(rec.raw, rec.kind)
        blob = reg.encode(payload, version=version)
        assert reg.decode(blob) == payload
        versioned += peek_header(blob).encoder_id != 0
    assert versioned > 0  # the version (its model or its zstd fallback), not only the stub, coded records


def test_wandb_offline_files_hold_the_logged_metrics(trained):
    from helpers.ray_jobs import read_wandb_run

    storage, summary, _ = trained
    run = read_wandb_run(storage / "two-workers" / "wandb")
    assert run["files"] and {r["group"] for r in run["runs"]} == {"two-workers"}
    assert run["config"]["model"]["family"] == "transformer"
    keys = set().union(*run["history"])
    assert {"loss_bits_per_token", "lr", "tokens_per_s", "val_bits_per_byte"} <= keys
    vals = [h["val_bits_per_byte"] for h in run["history"] if "val_bits_per_byte" in h]
    assert vals[-1] == pytest.approx(summary["metrics"]["val_bpb"])
    assert any(a["type"] == "model" for a in run["artifacts"])
    # what a team compares: per-type bench results and the anchors on the same bench records
    s = run["summary"]
    assert s["bench/by_type/_type"] == "table-file" and s["bench/plot/_type"] == "image-file"
    assert s["reference/zstd-19-dict_ratio"] > 1 and s["reference/brotli-11_ratio"] > 1
    assert s["reference/vs_zstd-19-dict"] == pytest.approx(s["bench/ratio"] / s["reference/zstd-19-dict_ratio"])


def test_worker_crash_resumes_from_the_checkpoint_and_ends_at_the_same_step(ray_head, trained, tmp_path):
    _, summary, _ = trained
    state = _state(summary)
    spe, total = state["steps_per_epoch"], state["total_steps"]
    crashed = train(ray_head, tmp_path, "crash", f"run.fail_at_step={spe + spe // 2}", "export.enabled=false",
                    "wandb.enabled=false")
    m = crashed["metrics"]
    assert (tmp_path / "crash" / ".fail_injected").exists()  # the crash really happened
    assert m["resumed_from"] == [spe]  # from the epoch-1 checkpoint, not from step 0
    assert m["step"] == m["total_steps"] == total
    assert m["val_bpb"] == pytest.approx(summary["metrics"]["val_bpb"], rel=0.05)


@pytest.mark.slow
def test_resume_continues_an_interrupted_run(ray_head, tmp_path):
    """A run whose worker dies with no retries left fails; `--resume` continues it from its checkpoint."""
    from helpers.ray_jobs import run_module

    args = ["--config", "train/configs/tiny.yaml", f"run.storage_path={tmp_path}", "run.name=interrupted",
            "optim.epochs=1", "run.checkpoint_every=30", "run.max_failures=0", "export.enabled=false",
            "wandb.enabled=false"]
    first = run_module("train", [*args, "run.fail_at_step=45"], head=ray_head, cwd=REPO)
    assert first.returncode != 0 and not (tmp_path / "interrupted" / "result.json").exists()
    again = run_module("train", [*args, "--resume"], head=ray_head, cwd=REPO)
    assert again.returncode == 0, again.stderr[-4000:]
    m = json.loads((tmp_path / "interrupted" / "result.json").read_text())["metrics"]
    assert m["resumed_from"] == [30] and m["step"] == m["total_steps"]
