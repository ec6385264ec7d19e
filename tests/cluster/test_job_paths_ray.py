"""Inside a real `ray job submit --working-dir .`, relative storage paths are refused with what to pass.

`--print-config` runs only the config load, so each job is seconds: the job's environment is what is tested
(Ray's job supervisor sets RAY_JOB_CONFIG_JSON_ENV_VAR for the entrypoint; train/storage.py reads it).
"""
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]


def submit(head, *entrypoint: str) -> subprocess.CompletedProcess:
    from helpers.ray_jobs import ray_env

    ray = str(Path(sys.executable).parent / "ray")
    cmd = [ray, "job", "submit", "--address", head.dashboard_url, "--working-dir", ".", "--", *entrypoint]
    return subprocess.run(cmd, cwd=REPO, env=ray_env(), capture_output=True, text=True, timeout=240)


def test_a_job_with_relative_storage_fails_with_what_to_pass(ray_head):
    job = submit(ray_head, "python", "-m", "tune", "--config", "tune/configs/tiny.yaml", "--print-config",
                 "train_overrides=[data.source=../shared/corpus]")
    out = job.stdout + job.stderr
    assert job.returncode != 0, out[-3000:]
    for text in ("search.storage_path: 'runs/tune' is a relative path inside a submitted Ray job",
                 "registry.dir: 'runs/tune/registry'",
                 "train_overrides: data.source: '../shared/corpus'", "does not exist",
                 "or a URI (search.storage_path=s3://bucket/...)"):
        assert text in out, (text, out[-3000:])


def test_a_job_with_absolute_storage_and_uploaded_data_loads(ray_head, tmp_path):
    job = submit(ray_head, "python", "-m", "train", "--config", "train/configs/tiny.yaml", "--print-config",
                 f"run.storage_path={tmp_path}")
    out = job.stdout + job.stderr
    assert job.returncode == 0, out[-3000:]
    assert f"storage_path: {tmp_path}" in out and "source: data/sample" in out
