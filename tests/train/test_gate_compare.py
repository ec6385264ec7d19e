"""Gates that compare (tune.gates, tune.register.register_gated) and the main job's canary decision
(pipeline.main.stage_gate), both ways, on real artifacts: the released v1 as the current version, a tiny model
that is worse than it, and v1 itself as a candidate that is exactly as good. No Ray."""
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "models" / "v1"
LOW = {"ratio_mean": 0.1, "ratio_p5": 0.1, "ratio_min": 0.01}  # only the comparison can refuse


@pytest.fixture(scope="module")
def test_rows():
    from train.data import iter_rows, resolve_source

    return list(iter_rows(resolve_source(REPO / "data" / "sample"), "test", 24))


@pytest.fixture(scope="module")
def worse(tmp_path_factory):
    from helpers.artifacts import tiny_artifact

    return tiny_artifact(tmp_path_factory.mktemp("worse") / "v1", steps=20, dict_size=4096)


def _registry(tmp_path: Path) -> Path:
    """A registry whose current version is the released v1."""
    reg = tmp_path / "registry"
    reg.mkdir()
    shutil.copytree(V1, reg / "v1")
    (reg / "CURRENT").write_text("v1\n")
    return reg


def test_the_gate_refuses_a_candidate_worse_than_current(tmp_path, test_rows, worse):
    from tune.register import register_gated

    reg = _registry(tmp_path)
    out = register_gated(worse, reg, test_rows, LOW, staging=tmp_path / "stage")
    compare = out["gates"][-1]
    assert compare["gate"] == "at least as good as v1 (overall ratio)" and not compare["passed"]
    assert compare["value"] < compare["threshold"] == out["current_test"]["ratio"]
    assert all(g["passed"] for g in out["gates"][:-1])  # the gates alone would have let it in
    assert not out["registered"] and "at least as good as v1" in out["reason"]
    assert sorted(p.name for p in reg.iterdir()) == ["CURRENT", "v1"]


def test_a_candidate_as_good_as_current_is_registered_without_becoming_current(tmp_path, test_rows):
    from tune.register import current, register_gated

    reg = _registry(tmp_path)
    out = register_gated(V1, reg, test_rows, None, staging=tmp_path / "stage", set_current=False)
    assert out["registered"] and out["version"] == "v2" and current(reg) == "v1"
    assert out["gates"][-1]["passed"] and out["gates"][-1]["value"] == out["gates"][-1]["threshold"]
    assert all(g["passed"] for g in out["gates"])  # the real gates: v1 passes them on the sample


def test_the_real_gates_refuse_the_tiny_model_even_with_no_current_version(tmp_path, test_rows, worse):
    from tune.register import register_gated

    reg = tmp_path / "empty"
    reg.mkdir()
    out = register_gated(worse, reg, test_rows, None, staging=tmp_path / "stage")
    assert out["current"] is None and not any("at least as good" in g["gate"] for g in out["gates"])
    assert not out["registered"] and "ratio" in out["reason"]


@pytest.mark.parametrize("earned", [False, True], ids=["worse-no-canary", "as-good-canary"])
def test_the_main_job_canaries_only_what_earned_it(tmp_path, worse, earned):
    """stage_gate, the main job's decision, on the collected sample: canary iff a candidate earned it."""
    from rich.console import Console

    from nbmf.data.collect import CollectConfig, collect
    from pipeline.main import PipelineConfig, stage_gate

    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(V1, run / "registry" / "v1")
    (run / "registry" / "CURRENT").write_text("v1\n")
    collect(CollectConfig(sources=(str(REPO / "data" / "sample" / "val.jsonl"),), out=run / "dataset",
                          fractions=(0.6, 0.2, 0.2), progress=False))
    candidates = {"tiny": worse} if not earned else {"tiny": worse, "v1-again": V1}
    out = stage_gate(PipelineConfig(test_records=24), run, candidates, Console(quiet=True))
    tiny = out["decisions"][0]
    assert not tiny["registered"] and tiny["current"] == "v1" and tiny["reason"].startswith("refused")
    if earned:
        again = out["decisions"][1]
        assert again["registered"] and out["canary"] == again["version"] == "v2"
        assert again["test_ratio"] >= again["current_test_ratio"]
    else:
        assert out["canary"] is None
    assert (run / "registry" / "CURRENT").read_text().strip() == "v1"
