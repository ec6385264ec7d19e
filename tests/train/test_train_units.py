"""The training job's pieces without Ray: config, schedule, data sources, windows, checkpoints, CLI."""
import json
from pathlib import Path

import numpy as np
import pytest

from nbmf.blob import Fidelity, Kind
from train import checkpoint as ckpt_io
from train.config import TrainJobConfig, load
from train.data import iter_rows, resolve_source, shard_windows
from train.driver import main, run_training
from train.jobconfig import ConfigError
from train.loop import lr_at

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
PRESETS = sorted((REPO / "train" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_presets_load_and_name_their_command(preset):
    cfg = load(preset)
    assert isinstance(cfg, TrainJobConfig)
    first = preset.read_text().splitlines()[0]
    assert first.startswith("# ") and "-m train --config train/configs/" + preset.name in first


def test_tiny_preset_is_the_ci_shape():
    cfg = load(REPO / "train" / "configs" / "tiny.yaml")
    assert cfg.scaling.num_workers == 2 and not cfg.scaling.use_gpu and cfg.data.source == "data/sample"


def test_job_config_checks_cross_field_rules():
    with pytest.raises(ConfigError) as e:
        load(None, ["scaling.num_workers=0", "data.tokens_per_batch=10", "run.name=bad/name"])
    text = str(e.value)
    assert "num_workers" in text and "tokens_per_batch" in text and "run.name" in text


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 1e-3, 1e-4, 10, 100) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[100] == pytest.approx(1e-4)


def test_jsonl_source_holds_out_a_disjoint_test_split():
    src = resolve_source(SAMPLE)
    val = {r.id for r in iter_rows(src, "val")}
    test = {r.id for r in iter_rows(src, "test")}
    every = {json.loads(line)["id"] for line in (SAMPLE / "val.jsonl").read_text().splitlines()}
    assert val and test and not val & test and val | test == every
    assert len(list(iter_rows(src, "train", limit=5))) == 5


def test_collected_parquet_source(tmp_path):
    from nbmf.data.collect import CollectConfig, collect

    collect(CollectConfig(sources=(str(SAMPLE / "val.jsonl"),), out=tmp_path / "ds", progress=False))
    src = resolve_source(tmp_path / "ds")
    assert src.kind == "parquet"
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    rows = [r for split in ("train", "val", "test") for r in iter_rows(src, split)]
    assert len(rows) == 381 and all(r.kind in (Kind.TEXT, Kind.JSON) and r.raw for r in rows)
    assert {r.fidelity for r in rows} == {Fidelity.LOSSLESS} and all(type(r.kind) is Kind for r in rows)
    assert manifest["content_hash"].startswith("sha256:")


def test_bad_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nbmf collect"):
        resolve_source(tmp_path)


def test_shard_windows_are_bounded_and_deterministic():
    from nbmf.models import ModelConfig
    from nbmf.tokenizer import Tokenizer

    rows = list(iter_rows(resolve_source(SAMPLE), "train", limit=60))
    tok = Tokenizer.train((r.raw for r in rows), vocab_size=300)
    mcfg = ModelConfig(vocab_size=tok.vocab_size, d_model=16, n_heads=2, context=32)
    batch = {"raw": np.array([r.raw for r in rows], dtype=object), "kind": np.array([r.kind for r in rows]),
             "fidelity": np.zeros(len(rows), dtype=np.int8)}
    w1, nbytes, n = shard_windows([batch], tok, mcfg, semantic_share=0.5, seed=1)
    w0, _, _ = shard_windows([batch], tok, mcfg, semantic_share=0.0)
    again, _, _ = shard_windows([batch], tok, mcfg, semantic_share=0.5, seed=1)
    assert n == 60 and nbytes == sum(len(r.raw) for r in rows)
    assert all(2 <= len(w) <= mcfg.context + 1 for w in w1)
    assert len(w1) > len(w0)  # semantic copies were added
    assert len(again) == len(w1) and all(np.array_equal(a, b) for a, b in zip(again, w1))
    conditioning = {int(w[0]) for w in w1 if w[0] >= tok.vocab_size}
    assert conditioning & {mcfg.special_token(k, 1) for k in (0, 1)}  # semantic records are conditioned as such


def test_checkpoint_round_trip_and_tamper_detection(tmp_path):
    import torch

    from nbmf.models import build_model
    from nbmf.tokenizer import Tokenizer
    from train.loop import make_optimizer

    tok = Tokenizer.train([b"hello world"] * 20, vocab_size=260)
    cfg = load(None, ["model.vocab_size=260", "model.d_model=16", "model.n_heads=2", "model.context=32",
                      "data.tokens_per_batch=64"])
    model = build_model(cfg.model)
    opt = make_optimizer(model, cfg.optim)
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    ckpt_io.save(tmp_path, model=model, optimizer=opt, tokenizer=tok, config={"model": {"d_model": 16}},
                 state={"step": 7, "steps_per_epoch": 3})
    loaded = ckpt_io.load(tmp_path)
    assert loaded.state["step"] == 7 and loaded.tokenizer_json == tok.to_json()
    assert all(torch.equal(loaded.model_state[k], v) for k, v in model.state_dict().items())
    make_optimizer(model, cfg.optim).load_state_dict(loaded.optim_state)
    (tmp_path / ckpt_io.STATE).write_text('{"step": 9999}')
    with pytest.raises(ckpt_io.CheckpointError, match="state.json"):
        ckpt_io.load(tmp_path)


def test_cli_reports_config_problems_with_exit_2(capsys):
    assert main(["--config", str(REPO / "train" / "configs" / "tiny.yaml"), "optim.lr=fast", "modle.x=1"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr: expected float" in err and "did you mean 'model'" in err


def test_resume_needs_a_run_name(capsys):
    assert main(["--config", str(REPO / "train" / "configs" / "tiny.yaml"), "--resume"]) == 2
    assert "run.name" in capsys.readouterr().err


def test_an_existing_run_is_not_overwritten(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "tokenizer.json").write_text("{}")
    cfg = load(REPO / "train" / "configs" / "tiny.yaml", [f"run.storage_path={tmp_path}"])
    with pytest.raises(SystemExit, match="--resume"):
        run_training(cfg, name="taken")
    with pytest.raises(SystemExit, match="nothing to resume"):
        run_training(cfg, name="absent", resume=True)


@pytest.mark.parametrize("key, expect", [("", "offline"), ("abc", "online")])
def test_wandb_mode_follows_the_api_key(monkeypatch, tmp_path, key, expect):
    from train.wandb_logging import resolve_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)  # set by conftest; honoured when set (tests/cluster)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_API_KEY", key) if key else monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_mode("") == expect
    assert resolve_mode("disabled") == "disabled"


def test_an_artifact_gets_its_fallback_dictionary_once_and_keeps_its_fingerprint(tmp_path, monkeypatch):
    """python -m train.dictionary (how models/v1 got its zstd.dict): the dictionary of the recipe, the command in
    the manifest's training commands, the model's fingerprint unchanged, and never a second dictionary."""
    from helpers.artifacts import tiny_artifact
    from nbmf.artifact import DICTIONARY, fingerprint, read_manifest
    from nbmf.codecs.fallback import load
    from nbmf.dictionary import DictionarySpec, train_dictionary
    from nbmf.errors import ArtifactError
    from train.dictionary import main as add_main

    monkeypatch.setenv("NBMF_CACHE_DIR", str(tmp_path / "cache"))
    art = tiny_artifact(tmp_path / "v1", steps=2)
    before = fingerprint(read_manifest(art))
    argv = [str(art), "--train", str(SAMPLE / "train.jsonl"), "--size", "4096", "--samples", "300"]
    assert add_main(argv) == 0
    manifest = read_manifest(art)
    want, _ = train_dictionary(SAMPLE / "train.jsonl", DictionarySpec(4096, 300))
    assert (art / DICTIONARY).read_bytes() == want == load(art).dictionary
    assert fingerprint(manifest) == before and manifest["fallback"]["samples"] == 300
    assert manifest["training"]["commands"][-1].startswith("python -m train.dictionary " + " ".join(argv))
    with pytest.raises(ArtifactError, match="never replaced"):
        add_main(argv)
