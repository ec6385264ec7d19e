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


def test_gpu_nodes_run_a_gpu_image_with_drivers(config):
    """The Ray GPU image (CUDA) in containers on a Deep Learning AMI (NVIDIA driver + container toolkit)."""
    import ray

    docker = validate(config)["docker"]
    assert docker["worker_image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"  # the Ray this repo pins
    assert docker["image"].startswith(f"rayproject/ray:{ray.__version__}-py311")
    for name, node in config["available_node_types"].items():
        assert "deeplearning" in node["node_config"]["ImageId"] and "nvidia-driver" in node["node_config"]["ImageId"]


def test_every_worker_type_has_an_instance_profile_for_s3(config):
    """Ray attaches its role to the head only: a worker without a profile cannot write s3:// checkpoints."""
    nodes = validate(config)["available_node_types"]
    workers = [n for n in nodes if n != "head"]
    assert workers and all(nodes[n]["node_config"].get("IamInstanceProfile") for n in workers)


def test_serve_has_cpu_nodes_that_gpu_nodes_lack(config):
    """Serve's deployments ask for the cpu_node resource: only CPU node types offer it, so replicas stay off GPU
    nodes (which can then scale down) unless a deployment asks for a GPU."""
    nodes = validate(config)["available_node_types"]
    for name, node in nodes.items():
        has_gpu = node["resources"].get("GPU", 0) > 0
        assert bool(node["resources"].get("cpu_node")) != has_gpu, name
    assert nodes["cpu_worker"]["max_workers"] >= 1  # Serve autoscales onto these


def test_the_header_commands_use_uris(config):
    """The cluster commands pass a storage URI and the registry on the shared mount the containers see (relative
    paths are refused inside a job)."""
    head = (ROOT / "cluster.yaml").read_text().splitlines()[:4]
    submit = next(line for line in head if "ray job submit" in line)
    assert "search.storage_path=s3://" in submit and "registry.dir=/mnt/shared/" in submit
    assert any("/mnt/shared:/mnt/shared" in o for o in config["docker"]["run_options"])


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
