"""Storage by URI (train/storage.py): local paths, file:// and an object store stand-in, and what a job may use.

The object store is fsspec's in-memory filesystem (``memory://``) behind pyarrow's ``PyFileSystem``: the same
pyarrow calls a real ``s3://`` or ``gs://`` location goes through, no network.
"""
import json
import shutil
import uuid
from pathlib import Path

import pytest

from train import storage
from train.jobconfig import ConfigError

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"


@pytest.fixture
def bucket():
    """A fresh prefix in the in-memory object store, removed afterwards."""
    import fsspec

    prefix = f"memory://bucket-{uuid.uuid4().hex[:8]}"
    yield prefix
    fsspec.filesystem("memory").rm(prefix.removeprefix("memory://"), recursive=True)


@pytest.fixture
def in_job(monkeypatch, tmp_path):
    """This process as a `ray job submit --working-dir .` entrypoint: Ray's job env var, cwd = the uploaded copy."""
    work = tmp_path / "job_working_dir"
    shutil.copytree(SAMPLE, work / "data" / "sample")
    monkeypatch.setenv(storage.JOB_ENV, json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_abc.zip"}}))
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize("given, expect", [
    ("s3://bucket/runs", "s3://bucket/runs"), ("gs://b/x/", "gs://b/x/"), ("file:///abs/x", "/abs/x"),
    ("/abs/x/../y", "/abs/y")])
def test_resolve_keeps_uris_and_makes_local_paths_absolute(given, expect):
    assert storage.resolve(given) == expect


def test_join_and_uri_detection():
    assert storage.join("s3://b/runs/", "s", "t") == "s3://b/runs/s/t"
    assert storage.join("/abs/runs", "s", "t") == "/abs/runs/s/t"
    assert storage.is_uri("s3://b") and storage.is_uri("memory://b") and not storage.is_uri("file:///x")


def test_copy_list_and_read_through_an_object_store(bucket, tmp_path):
    storage.copy_dir(str(SAMPLE), f"{bucket}/corpus")
    files = dict(storage.listing(f"{bucket}/corpus"))
    assert files["train.jsonl"] == (SAMPLE / "train.jsonl").stat().st_size and "val.jsonl" in files
    storage.write_text(f"{bucket}/notes/CURRENT", "v2\n")
    assert storage.read_text(f"{bucket}/notes/CURRENT") == "v2\n" and storage.exists(f"{bucket}/notes")
    assert storage.listing(f"{bucket}/absent") == [] and not storage.exists(f"{bucket}/absent")
    with pytest.raises(FileExistsError, match="never overwritten"):
        storage.upload_new(tmp_path, f"{bucket}/corpus")


def test_a_remote_data_source_is_cached_once_and_reads_like_the_local_one(bucket, tmp_path):
    from train.data import data_hash, iter_rows, resolve_source

    storage.copy_dir(str(SAMPLE), f"{bucket}/corpus")
    cache = tmp_path / "cache"
    local = resolve_source(SAMPLE)
    first = storage.local_dir(f"{bucket}/corpus", cache)
    marker = (first / ".nbmf-listing").stat().st_mtime_ns
    assert storage.local_dir(f"{bucket}/corpus", cache) == first
    assert (first / ".nbmf-listing").stat().st_mtime_ns == marker  # nothing downloaded the second time
    storage.write_text(f"{bucket}/corpus/test.jsonl", (SAMPLE / "val.jsonl").read_text())
    assert (storage.local_dir(f"{bucket}/corpus", cache) / "test.jsonl").is_file()  # a changed listing refreshes

    src = resolve_source(f"{bucket}/corpus")  # default cache dir: NBMF_CACHE_DIR in the test env or ~/.cache
    assert src.kind == "jsonl" and src.remote == f"{bucket}/corpus"
    assert [r.raw for r in iter_rows(src, "train", 20)] == [r.raw for r in iter_rows(local, "train", 20)]
    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_source(f"{bucket}/nothing")
    assert data_hash(resolve_source(SAMPLE)) == data_hash(local)


def test_file_uris_are_local_sources():
    from train.data import resolve_source

    assert resolve_source(f"file://{SAMPLE}").path == SAMPLE and resolve_source(f"file://{SAMPLE}").remote == ""


def test_outside_a_job_relative_paths_are_fine(monkeypatch):
    from train.config import load

    monkeypatch.delenv(storage.JOB_ENV, raising=False)
    assert storage.submitted_job() is None
    assert load(REPO / "train" / "configs" / "tiny.yaml").run.storage_path == "runs"


def test_in_a_job_relative_outputs_and_missing_inputs_are_one_config_error(in_job):
    from train.config import load

    with pytest.raises(ConfigError) as e:
        load(REPO / "train" / "configs" / "tiny.yaml", ["data.source=../shared/corpus", "wandb.dir=wb"])
    text = str(e.value)
    assert len(e.value.problems) == 3
    for key in ("run.storage_path: 'runs'", "wandb.dir: 'wb'", "data.source: '../shared/corpus'"):
        assert key in text, key
    assert "does not exist" in text and "temporary working directory" in text
    assert "pass an absolute path" in text and "run.storage_path=s3://bucket/" in text


def test_in_a_job_uris_absolute_paths_and_uploaded_inputs_pass(in_job, tmp_path):
    from train.config import load

    cfg = load(REPO / "train" / "configs" / "tiny.yaml", [f"run.storage_path={tmp_path}/runs"])
    assert cfg.data.source == "data/sample"  # uploaded with --working-dir: exists in the job's copy
    load(REPO / "train" / "configs" / "tiny.yaml", ["run.storage_path=s3://bucket/runs",
                                                    "data.source=gs://bucket/corpus", "wandb.dir=file:///w"])


def test_in_a_job_tune_wants_absolute_search_storage_and_registry(in_job, tmp_path):
    from tune import config as tcfg

    preset = REPO / "tune" / "configs" / "tiny.yaml"
    with pytest.raises(ConfigError) as e:
        tcfg.load(preset, [f"train={REPO / 'train' / 'configs' / 'tiny.yaml'}"])
    assert {p.split(":")[0] for p in e.value.problems} == {"search.storage_path", "registry.dir"}
    tcfg.load(preset, [f"train={REPO / 'train' / 'configs' / 'tiny.yaml'}", "search.storage_path=s3://b/tune",
                       f"registry.dir={tmp_path}/models"])


def test_a_registry_at_a_uri_keeps_its_numbering_current_and_never_overwrites(bucket, tmp_path):
    from train.data import iter_rows, resolve_source
    from tune.driver import register_gated

    rows = list(iter_rows(resolve_source(SAMPLE), "test", 8))
    reg = f"{bucket}/models"
    # what is tested is the registry; latency gates on a shared 2-core machine would only add noise
    calm = {"encode_ms_p95": 1e9, "decode_ms_p95": 1e9}
    first = register_gated(REPO / "models" / "v1", reg, rows, calm, staging=tmp_path / "s1")
    assert first["registered"] and first["version"] == "v1" and first["path"] == f"{reg}/v1"
    second = register_gated(REPO / "models" / "v1", reg, rows, calm, staging=tmp_path / "s2", set_current=False)
    assert second["version"] == "v2" and storage.read_text(f"{reg}/CURRENT").strip() == "v1"
    third = register_gated(REPO / "models" / "v1", reg, rows, calm, staging=tmp_path / "s3")
    assert third["version"] == "v3" and storage.read_text(f"{reg}/CURRENT").strip() == "v3"
    names = {p.split("/")[0] for p, _ in storage.listing(reg)}
    assert names == {"v1", "v2", "v3", "CURRENT"}
    manifest = json.loads(storage.read_text(f"{reg}/v3/manifest.json"))
    assert manifest["version"] == "v3" and manifest["metrics"]["test_exact_rate"] == 1.0
    failed = register_gated(REPO / "models" / "v1", reg, rows, {**calm, "ratio_mean": 1e3}, staging=tmp_path / "s4")
    assert not failed["registered"] and {p.split("/")[0] for p, _ in storage.listing(reg)} == names


def test_storage_doctests():
    import doctest

    assert doctest.testmod(storage).failed == 0


def test_a_remote_runs_driver_files_are_kept_in_its_storage(bucket, tmp_path):
    """With remote storage the driver's local files (tokenizer, result.json, the artifact's copy) would vanish with
    the job's working directory: they are copied to <storage>/<run>/driver. Local storage needs no copy."""
    from train.driver import keep_driver_files, local_run_dir

    local = tmp_path / "runs" / "r1"
    (local / "artifact").mkdir(parents=True)
    (local / "result.json").write_text('{"run": "r1"}')
    (local / "artifact" / "manifest.json").write_text("{}")
    dest = keep_driver_files(bucket, "r1", local)
    assert dest == f"{bucket}/r1/driver"
    assert storage.read_text(f"{dest}/result.json") == '{"run": "r1"}'
    assert storage.exists(f"{dest}/artifact/manifest.json")
    assert keep_driver_files(str(tmp_path), "r1", local) == "" and local_run_dir(str(tmp_path), "r1") == tmp_path / "r1"
