"""The search's pieces without Ray: config and space, Pareto front, winner choice, gates, registry."""
import json
from pathlib import Path

import pytest

from train.jobconfig import ConfigError
from tune import config as tcfg
from tune import register
from tune.driver import choose, register_gated
from tune.results import pareto_front, plot, write_csv

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "tune" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_presets_load_and_name_their_command(preset):
    cfg = tcfg.load(preset)
    assert "model.family" in tcfg.flat_space(cfg.space)
    assert "-m tune --config tune/configs/" + preset.name in preset.read_text().splitlines()[0]


def test_space_covers_family_latent_depth_vocab_and_lr():
    cfg = tcfg.load(REPO / "tune" / "configs" / "tiny.yaml")
    assert set(tcfg.flat_space(cfg.space)) == {"model.family", "model.d_model", "model.n_layers",
                                                "model.vocab_size", "optim.lr"}


def test_bad_space_and_gates_are_reported_together():
    with pytest.raises(ConfigError) as e:
        tcfg.load(REPO / "tune" / "configs" / "tiny.yaml", [
            "space.model.family.choice=[rnn]", "space.model.d_model.choice=[17]",
            "space.model.n_heads={choice: [2], uniform: [1, 2]}", "space.optim.lr.loguniform=[1, 0.1]",
            "space.model.width={choice: [1]}", "gates.thresholds.speed=1"])
    text = "\n".join(e.value.problems)
    for fragment in ("family must be one of", "multiple of n_heads", "n_heads: exactly one of {choice",
                     "optim.lr.loguniform: [low, high]", "width: unknown key", "thresholds.speed: unknown gate"):
        assert fragment in text, fragment


def test_vocab_size_must_be_a_choice(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(f"train: {REPO / 'train' / 'configs' / 'tiny.yaml'}\nspace: {{model: {{vocab_size: {{randint: [256, 512]}}}}}}\n")
    with pytest.raises(ConfigError, match="vocab_size: must be a choice"):
        tcfg.load(p)


def test_trial_overrides_are_valid_dotted_overrides():
    assert tcfg.trial_overrides({"optim.lr": 0.003, "model.family": "cnn"}) == [
        'model.family="cnn"', "optim.lr=0.003"]


def test_pareto_front_keeps_only_undominated_points():
    pts = [(10.0, 2.0), (5.0, 2.5), (20.0, 3.0), (6.0, 1.0), (25.0, 2.9)]
    assert pareto_front(pts) == [1, 2]
    assert pareto_front([]) == []


def _row(trial, ratio, p95, eligible=True, status="finished"):
    return {"trial": trial, "ratio": ratio, "decode_ms_p95": p95, "eligible": eligible, "status": status,
            "winner": False, "family": "cnn", "note": ""}


def test_winner_is_the_best_ratio_among_eligible_trials():
    rows = [_row("a", 3.0, 200.0, eligible=False), _row("b", 2.5, 50.0), _row("c", 2.5, 40.0), _row("d", 1.0, 1.0)]
    assert choose(rows)["trial"] == "c" and rows[2]["winner"]
    assert choose([_row("x", 3.0, 500.0, eligible=False)]) is None


def test_results_files(tmp_path):
    rows = [_row("t1", 2.0, 10.0), _row("t2", 2.4, 30.0), _row("t3", None, None, eligible=False, status="stopped")]
    rows[1]["winner"] = True
    write_csv(rows, tmp_path / "r.csv")
    plot(rows, tmp_path / "p.png", budget_ms=25.0)
    assert (tmp_path / "r.csv").read_text().count("\n") == 4
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_thresholds_move_but_gates_stay_nbmf_bench_gates():
    from nbmf.bench.metrics import GATES
    from tune.gates import gate_list

    gates = gate_list({"ratio_mean": 1.2})
    assert {g.name for g in gates} == {g.name for g in GATES if g.fidelity != "semantic"}
    assert next(g for g in gates if g.metric == "ratio_mean").threshold == 1.2
    assert next(g for g in gates if g.metric == "ratio_p5").threshold == 2.0


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Two real tiny artifacts exported as v1 and v2 (seconds on CPU)."""
    from helpers.artifacts import tiny_artifact

    d = tmp_path_factory.mktemp("art")
    return {v: tiny_artifact(d / v, version=v, steps=5, records=120) for v in ("v1", "v2")}


def test_registry_adds_versions_and_keeps_earlier_ones(artifacts, tmp_path):
    reg = tmp_path / "models"
    assert register.next_version(reg) == "v1" and register.current(reg) is None
    with register.locked(reg):
        register.register(artifacts["v1"], reg, "v1")
    with register.locked(reg):
        register.register(artifacts["v2"], reg, "v2")
    assert register.versions(reg) == ["v1", "v2"] and register.current(reg) == "v2"
    assert register.next_version(reg) == "v3"
    assert json.loads((reg / "v1" / "manifest.json").read_text())["version"] == "v1"
    with pytest.raises(register.RegistryError, match="never replaced"):
        register.register(artifacts["v1"], reg, "v1")
    with pytest.raises(register.RegistryError, match="exported as 'v1'"):
        register.register(artifacts["v1"], reg, "v3")
    assert register.versions(reg) == ["v1", "v2"] and register.current(reg) == "v2"


def test_registry_refuses_a_tampered_artifact(artifacts, tmp_path):
    import shutil

    from nbmf.errors import ArtifactError

    bad = tmp_path / "bad"
    shutil.copytree(artifacts["v1"], bad)
    (bad / "tokenizer.json").write_text((bad / "tokenizer.json").read_text() + " ")
    with pytest.raises(ArtifactError):
        register.register(bad, tmp_path / "models", "v1")
    assert register.versions(tmp_path / "models") == []


@pytest.mark.parametrize("path, storage, expect", [
    ("/tmp/r/s/runs/t/checkpoint_1", "/tmp/r", "/tmp/r/s/runs/t/checkpoint_1"),
    ("bucket/tune/s/runs/t/checkpoint_1", "s3://bucket/tune", "s3://bucket/tune/s/runs/t/checkpoint_1"),
    ("gs://b/x", "gs://b", "gs://b/x"),
    (None, "s3://b", None),
])
def test_checkpoint_paths_keep_their_storage_scheme(path, storage, expect):
    from tune.driver import _checkpoint_uri

    assert _checkpoint_uri(path, storage) == expect


def test_module_doctests():
    """train/ and tune/ are outside the suite's doctest paths: run their examples here."""
    import doctest

    import tune.results

    assert doctest.testmod(tune.results).failed == 0


def test_register_gated_registers_only_what_passes(tmp_path):
    """The pipeline's validate-and-register step: gated on test rows, registered as the next version."""
    from train.data import iter_rows, resolve_source

    rows = list(iter_rows(resolve_source(REPO / "data" / "sample"), "test", 8))
    reg = tmp_path / "registry"
    reg.mkdir()
    failed = register_gated(REPO / "models" / "v1", reg, rows, {"ratio_mean": 1000.0}, staging=tmp_path / "stage")
    assert not failed["registered"] and "1000" in failed["reason"] and list(reg.iterdir()) == []
    done = register_gated(REPO / "models" / "v1", reg, rows, None, staging=tmp_path / "stage", set_current=False)
    assert done["registered"] and done["version"] == "v1" and (reg / "v1" / "manifest.json").is_file()
    assert register.current(reg) is None
    again = register_gated(REPO / "models" / "v1", reg, rows, None, staging=tmp_path / "stage")
    assert again["version"] == "v2" and register.current(reg) == "v2"
    manifest = json.loads((reg / "v2" / "manifest.json").read_text())
    assert manifest["version"] == "v2" and manifest["metrics"]["params"] == 918912  # the export's metrics kept ...
    assert manifest["metrics"]["test_ratio_mean"] == again["test"]["ratio_mean"]  # ... and the gate's test figures
