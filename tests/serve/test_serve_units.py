"""Serve pieces that need no running Ray: canary routing, builder args, schemas, config.yaml, doctests."""
from __future__ import annotations

import doctest
import importlib
import random
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from serve.args import AppArgs
from serve.canary import CanaryRouter, bucket
from serve.schemas import EncodeItem, EncodeRequest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_canary_share_within_tolerance(share):
    router = CanaryRouter(current="v1", candidate="v2", share=share)
    n = 20_000
    hits = sum(router.choose(f"mem-{i}") == "v2" for i in range(n))
    sd = (share * (1 - share) / n) ** 0.5
    assert abs(hits / n - share) < 5 * sd  # 5 sigma: a broken hash fails, luck does not


def test_canary_is_sticky_and_only_moves_records_forward():
    ids = [f"rec-{i}" for i in range(5_000)]
    steps = [CanaryRouter("v1", "v2", s) for s in (0.1, 0.5, 1.0)]
    choices = [[r.choose(i) for i in ids] for r in steps]
    assert choices[0] == [steps[0].choose(i) for i in ids]  # same answer every time
    for before, after in zip(choices, choices[1:]):
        # a rollout step moves records v1 -> v2 only, never back
        assert all(a == "v2" for b, a in zip(before, after) if b == "v2")
    assert set(choices[2]) == {"v2"}


def test_canary_without_record_id_draws_at_random():
    router = CanaryRouter("v1", "v2", 0.5, rng=random.Random(7))
    picks = [router.choose(None) for _ in range(4_000)]
    assert 0.45 < picks.count("v2") / len(picks) < 0.55


def test_canary_bucket_is_stable_across_processes():
    # pinned: a change of hash would silently re-route records in the middle of a rollout
    assert bucket("mem-1") == 0.1343012102734326
    assert CanaryRouter("v1").choose("x") == "v1"
    with pytest.raises(ValueError, match="within"):
        CanaryRouter("v1", "v2", 1.5)


@pytest.mark.parametrize("bad", [{"current": "v0"}, {"candidate": "latest"}, {"canary_share": -0.1},
                                 {"loader": "no_colon"}, {"autoscaling": {"min_replicas": 4, "max_replicas": 2}},
                                 {"unknown_key": 1}, {"preload": ["v1", "bad"]}])
def test_app_args_reject_bad_values(bad):
    with pytest.raises(ValidationError):
        AppArgs.model_validate(bad)


def test_app_args_accept_cli_strings():
    args = AppArgs.model_validate({"model_dir": "models", "canary_share": "0.5", "candidate": "v2", "replicas": "2"})
    assert args.canary_share == 0.5 and args.replicas == 2


@pytest.mark.parametrize("body, item", [
    ({"payload": "hi"}, ("hi", "text", "lossless")),
    ({"payload": {"a": 1}, "fidelity": "semantic"}, ({"a": 1}, "json", "semantic")),
    ({"payload": "hi", "kind": "json"}, ("hi", "json", "lossless")),
    ({"payload": "AAEC", "kind": "bytes"}, (b"\x00\x01\x02", "bytes", "lossless")),
    ({"payload": None}, (None, "json", "lossless")),
])
def test_encode_item_to_codec_item(body, item):
    assert EncodeItem.model_validate(body).to_item() == item


@pytest.mark.parametrize("body", [
    {}, {"payload": "x", "fidelity": "lossy"}, {"payload": "x", "kind": "xml"}, {"payload": 5, "kind": "text"},
    {"payload": [1], "kind": "bytes"}, {"payload": "not base64!", "kind": "bytes"}, {"payload": "x", "extra": 1},
    {"payload": "x", "format": "zip"},
])
def test_encode_request_rejects(body):
    with pytest.raises(ValidationError):
        EncodeRequest.model_validate(body)


def test_config_yaml_is_a_valid_serve_deploy_config():
    from ray.serve.schema import ServeDeploySchema

    cfg = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(cfg)
    (app,) = schema.applications
    assert app.import_path == "serve.app:build_app"
    AppArgs.model_validate(app.args)  # the args build_app will get are valid
    by_name = {d.name: d for d in app.deployments}
    assert by_name["CodecModel"].autoscaling_config["max_replicas"] >= by_name["CodecModel"].autoscaling_config["min_replicas"]
    # rollout steps touch only user_config (a lightweight update; args would restart every replica)
    assert set(by_name["Ingress"].user_config) == {"current", "candidate", "canary_share", "domains"}
    assert set(by_name["CodecModel"].user_config) == {"preload"}


@pytest.mark.parametrize("module", ["serve.args", "serve.canary", "serve.codec_ops", "serve.deadline"])
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_serve_reads_the_model_dir_by_the_library_rule(tmp_path):
    """codec_ops lists versions and reads CURRENT through nbmf.modeldir: the same answers as the Registry."""
    from nbmf.errors import UnknownVersionError
    from nbmf.registry import Registry
    from serve import codec_ops
    from serve.args import check_version

    for name in ("v2", "v01", "v10"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
    assert codec_ops.list_versions(tmp_path) == ["v2", "v10"] == Registry(tmp_path).versions()[1:]
    assert codec_ops.current_version(tmp_path) == "stub"
    (tmp_path / "CURRENT").write_text("v10\n")
    assert codec_ops.current_version(tmp_path) == "v10" == Registry(tmp_path).current
    (tmp_path / "CURRENT").write_text("v01\n")  # before: silently the stub here, an error in the library
    with pytest.raises(UnknownVersionError):
        codec_ops.current_version(tmp_path)
    for bad in ("v01", "v1\n", "V1"):
        with pytest.raises(ValueError):
            check_version(bad)


def test_http_spellings_are_the_library_enums():
    """serve/schemas.py spells kind and fidelity as Literals (no nbmf import there); they must be the enums' labels."""
    from typing import get_args

    from nbmf.blob import Fidelity, Kind
    from serve import schemas

    assert get_args(schemas.Kind) == tuple(k.label for k in Kind)
    assert get_args(schemas.Fidelity) == tuple(f.label for f in Fidelity)


def test_a_model_replica_reports_its_versions_fallback_blobs():
    """A model replica (VersionModel over the released v1) writes a record v1's model codes badly with v1's zstd
    fallback: the blob says so (encoder v1, fallback bit), the reply gives the reason, and it decodes there."""
    from nbmf.blob import peek_header
    from nbmf.codecs.neural import load_codec
    from nbmf.modeldir import default_model_dir
    from serve import codec_ops

    model = codec_ops.VersionModel("v1", load_codec(default_model_dir() / "v1"))
    repeated = "Remember: the user prefers metric units. " * 8  # docs/FORMAT.md's fallback example
    record = {"role": "user", "content": "Please book a table for two at seven tonight, by the window."}
    (blob, reason), (neural, none) = model.encode([(repeated, "text", "lossless"), (record, "json", "lossless")])
    assert peek_header(blob).fallback and codec_ops.blob_version(blob) == "v1" and reason == "larger"
    assert not peek_header(neural).fallback and none is None
    assert [o.payload for o in model.decode([blob, neural], 1 << 20)] == [repeated, record]


@pytest.mark.parametrize("gpus", [0, 1])
def test_replicas_ask_for_the_configured_resources_and_a_gpu_replica_leaves_them_out(gpus):
    """cluster.yaml gives only CPU nodes `cpu_node`: asking for a sliver keeps Serve off the GPU nodes."""
    from serve.app import build_app

    app = build_app({"model_dir": str(REPO / "models"), "replica_resources": {"cpu_node": 0.001},
                     "model_num_gpus": gpus})
    ingress = app._bound_deployment  # Ray Serve's bound application: Ingress, bound to the model deployment
    model = ingress.init_args[0]._bound_deployment
    assert ingress.ray_actor_options["resources"] == {"cpu_node": 0.001}
    assert model.ray_actor_options["resources"] == ({} if gpus else {"cpu_node": 0.001})
    assert model.ray_actor_options["num_gpus"] == gpus
    cfg = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    assert cfg["applications"][0]["args"]["replica_resources"] == {"cpu_node": 0.001}
