"""cluster.yaml passes Ray's own launcher validation offline; broken variants do not."""
import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def validate(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates(config):
    prepared = validate(config)
    nodes = prepared["available_node_types"]
    assert nodes["gpu_worker"]["resources"]["GPU"] >= 1 and nodes["gpu_worker"]["max_workers"] >= 1
    assert prepared["head_node_type"] == "head"
    assert any('.[gpu]' in c for c in prepared["setup_commands"])


@pytest.mark.parametrize("breakage,match", [("typo_field", "max_wokers"), ("wrong_type", "not of type"),
                                            ("unknown_head_type", "head_node_type"), ("worker_over_max", "min_workers")])
def test_broken_cluster_yaml_is_rejected(config, breakage, match):
    bad = copy.deepcopy(config)
    if breakage == "typo_field":
        bad["max_wokers"] = 3
    elif breakage == "wrong_type":
        bad["available_node_types"]["gpu_worker"]["min_workers"] = "zero"
    elif breakage == "unknown_head_type":
        bad["head_node_type"] = "no_such_type"
    else:
        bad["available_node_types"]["gpu_worker"]["min_workers"] = 99
    with pytest.raises(Exception, match=match):
        validate(bad)
