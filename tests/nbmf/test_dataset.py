"""Dataset readers: pyarrow iteration with split/column/semantic selection, and ray.data over a split."""

import json
import os
from pathlib import Path

import pytest

import nbmf
from nbmf.blob import Fidelity, Kind
from nbmf.data.collect import CollectConfig, collect
from nbmf.data.corpus import iter_records as corpus_records
from nbmf.data.dataset import DatasetError, iter_records, ray_dataset, read_records, shard_paths
from nbmf.data.store import SQLiteL2Store

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "val.jsonl"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ds")
    store = tmp / "l2.sqlite"
    with SQLiteL2Store(store) as s:
        for i in range(6):
            s.put(f"sem{i}", nbmf.encode(f"semantic   record {i}", fidelity="semantic"), record_class="document")
    mf = collect(CollectConfig(sources=(str(SAMPLE), f"l2://{store}"), out=tmp / "ds", shard_rows=64,
                               fractions=(0.6, 0.2, 0.2), progress=False))
    return tmp / "ds", mf


def test_read_records_by_split_and_columns(dataset):
    path, mf = dataset
    total_lossless = sum(mf["fidelity"][s].get("lossless", 0) for s in mf["fidelity"])
    assert len(list(read_records(path))) == total_lossless
    for split in ("train", "val", "test"):
        rows = list(read_records(path, split, columns=["id", "n_bytes"], include_semantic=True))
        assert len(rows) == sum(mf["counts"][split].values())
        assert all(set(r) == {"id", "n_bytes"} for r in rows)
    semantic = [r for r in read_records(path, include_semantic=True) if r["fidelity"] == "semantic"]
    assert len(semantic) == 6 and all(r["raw"].startswith(b"semantic record") for r in semantic)


def test_iter_records_reads_columns_as_records(dataset):
    path, _ = dataset
    from_jsonl = {r.id: r for r in corpus_records(SAMPLE)}
    lossless = [r for split in ("train", "val", "test") for r in iter_records(path, split)]
    assert len(lossless) == len(from_jsonl)
    for r in lossless:  # the Parquet columns spell kind and fidelity; the records hold the enums
        src = from_jsonl[r.id]
        assert (r.raw, r.kind, r.fidelity, r.type, r.domain) == (src.raw, src.kind, Fidelity.LOSSLESS, src.type, src.domain)
        assert type(r.kind) is Kind and r.origin.startswith(str(SAMPLE))
    semantic = [r for r in iter_records(path, include_semantic=True) if r.fidelity == Fidelity.SEMANTIC]
    assert len(semantic) == 6 and all(r.kind == Kind.TEXT and r.type == "document" for r in semantic)


def test_reader_errors(dataset, tmp_path):
    path, _ = dataset
    with pytest.raises(DatasetError, match="unknown split"):
        list(read_records(path, "dev"))
    with pytest.raises(DatasetError, match="unknown column"):
        list(read_records(path, columns=["id", "nope"]))
    with pytest.raises(DatasetError, match="no manifest"):
        list(read_records(tmp_path))
    (tmp_path / "manifest.json").write_text("{truncated")
    with pytest.raises(DatasetError, match="not valid JSON"):
        shard_paths(tmp_path)


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_ray_dataset_over_a_split(dataset):
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    path, mf = dataset
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        ds = ray_dataset(path, "train", columns=["id", "raw"])
        rows = ds.take_all()
        expected = {r["id"] for r in read_records(path, "train", columns=["id"])}
        assert {r["id"] for r in rows} == expected and set(rows[0]) == {"id", "raw"}
        every = ray_dataset(path, "train", include_semantic=True).count()
        assert every == sum(mf["counts"]["train"].values()) >= len(expected)
    finally:
        if started:
            ray.shutdown()


def test_manifest_is_self_describing(dataset):
    path, mf = dataset
    on_disk = json.loads((path / "manifest.json").read_text())
    assert on_disk["content_hash"] == mf["content_hash"] and on_disk["format"] == "nbmf-dataset/1"
    assert on_disk["options"]["fractions"] == [0.6, 0.2, 0.2]
    import hashlib
    for shard in on_disk["shards"]:
        assert hashlib.sha256((path / shard["path"]).read_bytes()).hexdigest() == shard["sha256"]
