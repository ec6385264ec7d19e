"""train/wandb_logging.py with real W&B in offline mode: mode resolution, credentials for workers, and what an
offline run's files hold when read back (tables, images, summary, aliased artifacts, system metrics, exit)."""
import json
import uuid
from pathlib import Path

import pytest

from helpers.ray_jobs import read_wandb_run
from train import storage
from train import wandb_logging as wl

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path):
    """No W&B settings at all: no mode, no key, an empty netrc."""
    for var in wl.CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("")
    monkeypatch.setenv("NETRC", str(netrc))
    return netrc


def test_offline_only_when_nothing_else_is_configured(no_wandb_env):
    assert wl.resolve_mode("") == "offline"
    assert wl.resolve_mode("disabled") == "disabled" and wl.resolve_mode("online") == "online"


def test_wandb_mode_is_honoured(no_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wl.resolve_mode("") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wl.resolve_mode("") == "disabled"
    assert wl.resolve_mode("online") == "online"  # the config says so


def test_a_wandb_login_key_in_netrc_means_online_and_reaches_the_workers(no_wandb_env, monkeypatch):
    key = "a" * 40
    no_wandb_env.write_text(f"machine api.wandb.ai\n  login user\n  password {key}\n")
    no_wandb_env.chmod(0o600)
    assert wl.netrc_key() == key and wl.resolve_mode("") == "online"
    monkeypatch.setenv("WANDB_ENTITY", "team")
    assert wl.worker_runtime_env() == {"env_vars": {"WANDB_API_KEY": key, "WANDB_ENTITY": "team"}}
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")  # another host: not this key
    assert wl.netrc_key() is None and wl.resolve_mode("") == "offline"


def test_without_credentials_workers_get_no_runtime_env(no_wandb_env):
    assert wl.worker_runtime_env() == {}


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """One real offline run using every RunLogger feature, copied to an object store when it finishes."""
    import fsspec
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = tmp_path_factory.mktemp("wb")
    plt.figure()
    plt.plot([1, 2, 3])
    plt.savefig(d / "bench.png")
    plt.close()
    bucket = f"memory://wb-{uuid.uuid4().hex[:8]}"
    log = wl.RunLogger(enabled=True, project="nbmf", group="g1", name="run-a", mode="offline",
                       directory=str(d / "local"), config={"optim": {"lr": 0.003}}, sync_to=f"{bucket}/run-a/wandb")
    for step in range(1, 4):
        log.log({"loss_bits_per_token": 4.0 / step}, step=step)
    log.table("trials", [{"trial": "t1", "ratio": 2.5}, {"trial": "t2", "ratio": 1.5}], ["trial", "ratio"])
    log.by_type("test/by_type", {"document": {"n": 5, "ratio": 3.0, "exact_rate": 1.0},
                                 "conversation": {"n": 4, "ratio": 2.0, "exact_rate": 1.0}})
    log.image("bench/pareto", d / "bench.png", caption="pareto")
    log.image("bench/missing", d / "nothing.png")  # a plot step that drew nothing: skipped
    log.references({"zstd-19-dict": 2.0, "brotli-11": 1.6}, ours=2.4)
    link = log.register(REPO / "models" / "v1", "nbmf-codec", "v7", aliases=["candidate", "production"])
    log.finish()
    remote = log.synced
    local = Path(d / "local")
    copied = d / "copied"
    storage.copy_dir(remote, str(copied))
    yield {"local": local, "remote": remote, "copied": copied, "link": link}
    fsspec.filesystem("memory").rm(bucket.removeprefix("memory://"), recursive=True)


def test_the_offline_run_reads_back_with_tables_images_references_and_summary(offline_run):
    run = read_wandb_run(offline_run["local"])
    assert run["runs"][0]["group"] == "g1" and run["runs"][0]["id"] == "run-a"
    assert run["config"]["optim"] == {"lr": 0.003}
    assert [h["loss_bits_per_token"] for h in run["history"] if "loss_bits_per_token" in h] == [4.0, 2.0, 4.0 / 3]
    s = run["summary"]
    assert s["trials/_type"] == "table-file" and s["trials/nrows"] == 2
    assert s["test/by_type/_type"] == "table-file" and s["test/by_type/nrows"] == 2
    assert s["bench/pareto/_type"] == "image-file" and not any(k.startswith("bench/missing") for k in s)
    assert s["reference/zstd-19-dict_ratio"] == 2.0 and s["reference/vs_brotli-11"] == pytest.approx(2.4 / 1.6)
    files = Path(run["files"][0]).parent / "files"
    by_type = json.loads(next((files / "media" / "table" / "test").glob("by_type_*.table.json")).read_text())
    assert by_type["columns"][:3] == ["type", "n", "ratio"]
    assert [r[:3] for r in by_type["data"]] == [["conversation", 4, 2.0], ["document", 5, 3.0]]
    assert list((files / "media" / "images").glob("bench/pareto_*.png"))


def test_system_metrics_are_on_and_the_run_finished(offline_run):
    run = read_wandb_run(offline_run["local"])
    assert run["stats"] >= 1 and run["exit_codes"] == [0]


def test_the_registered_version_is_an_aliased_model_artifact(offline_run):
    run = read_wandb_run(offline_run["local"])
    codec = [a for a in run["artifacts"] if a["name"] == "nbmf-codec"]
    assert len(codec) == 1 and codec[0]["type"] == "model"
    assert {"v7", "candidate", "production"} <= set(codec[0]["aliases"])
    link = offline_run["link"]
    assert link["linked"] is False and "wandb sync" in link["link_error"]  # W&B links online only
    assert run["summary"]["registered/aliases"] == ["v7", "candidate", "production"]


def test_the_offline_run_is_copied_to_storage_whole(offline_run):
    """What `wandb sync` needs after the node is gone: the run directory with its .wandb log and media files."""
    local_dirs = list((offline_run["local"] / "wandb").glob("offline-run-*"))
    assert len(local_dirs) == 1 and offline_run["remote"].endswith("/run-a/wandb/" + local_dirs[0].name)
    copied = read_wandb_run(offline_run["copied"])
    assert copied["summary"] == read_wandb_run(offline_run["local"])["summary"] and copied["exit_codes"] == [0]
    assert list(offline_run["copied"].glob("files/media/table/trials_*.table.json"))


def test_a_stopped_trials_run_is_finished_under_its_own_id(tmp_path):
    """A trial's rank 0 killed mid-run (as ASHA's stop kills it) leaves its run open; finish_stopped closes it."""
    import os
    import subprocess
    import sys

    directory = tmp_path / "trial"
    code = ("import os; from train.wandb_logging import RunLogger; "
            f"log = RunLogger(enabled=True, name='trial_0001', group='s', mode='offline', directory={str(directory)!r}); "
            "log.log({'val_bits_per_byte': 3.0}, step=1); os._exit(1)")
    # its own W&B service, as a Ray worker has (not this process's, which the environment would hand down)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"} | {"PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=False, timeout=120)
    assert read_wandb_run(directory)["exit_codes"] == []  # left open (W&B had not even flushed its log)
    wl.finish_stopped(name="trial_0001", directory=str(directory), group="s", mode="offline",
                      summary={"stopped_by": "ASHA", "epochs": 1})
    run = read_wandb_run(directory)
    assert {r["id"] for r in run["runs"]} == {"trial_0001"}
    assert run["summary"]["status"] == "stopped" and run["summary"]["stopped_by"] == "ASHA"
    assert run["exit_codes"] == [0]


def test_disabled_logging_writes_nothing(tmp_path):
    log = wl.RunLogger(enabled=False, directory=str(tmp_path / "w"))
    log.log({"x": 1}, 1)
    log.table("t", [{"a": 1}])
    assert log.register(tmp_path, "n", "v1", aliases=["candidate"]) == {}
    log.finish()
    assert not (tmp_path / "w").exists()
