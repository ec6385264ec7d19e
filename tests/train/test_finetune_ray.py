"""The one training path's presets on real Ray Train runs (the session's local head node, 2 CPU workers):
finetune with init_from (tokenizer kept, loss down on a new source, artifact as the last stdout line), the
release preset for a few steps (decode window, QAT, history, commands), and the wall-clock budget's stop and
--resume."""
import json
from pathlib import Path

import pytest

from nbmf.data.corpus import read_corpus

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"


def train(head, *args: str):
    from helpers.ray_jobs import run_module

    p = run_module("train", list(args), head=head, cwd=REPO)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-5000:])
    return p


def _only(kind: str, src: Path, dest: Path) -> None:
    lines = [json.dumps(r, ensure_ascii=False) for r in read_corpus(src) if r["type"] == kind]
    dest.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def new_source(tmp_path_factory) -> Path:
    """The sample's structured records alone: a source the tiny base model saw mixed with two other kinds."""
    d = tmp_path_factory.mktemp("structured")
    _only("structured", SAMPLE / "train.jsonl", d / "train.jsonl")
    _only("structured", SAMPLE / "val.jsonl", d / "val.jsonl")
    return d


def test_finetune_keeps_the_tokenizer_and_lowers_the_loss_on_a_new_source(ray_head, tmp_path, new_source):
    from helpers.artifacts import tiny_artifact
    from nbmf.artifact import fingerprint, read_manifest

    base = tiny_artifact(tmp_path / "base" / "v1", steps=30)
    p = train(ray_head, "--config", "train/configs/finetune.yaml", f"data.source={new_source}", f"init_from={base}",
              "run.max_minutes=0.3", f"run.storage_path={tmp_path / 'runs'}", "run.name=ft", "model.context=64",
              "data.tokens_per_batch=1024", "data.val_records=40", "optim.lr=3e-3", "export.bench_records=8",
              "wandb.enabled=false")
    artifact = Path(p.stdout.strip().splitlines()[-1])  # the last line names the exported artifact
    assert artifact == tmp_path / "runs" / "ft" / "artifact"
    manifest, before = read_manifest(artifact), read_manifest(base)
    assert manifest["files"]["tokenizer.json"] == before["files"]["tokenizer.json"]  # the tokenizer is kept
    assert manifest["architecture"] == before["architecture"]  # decode window: the base's
    training = manifest["training"]
    assert training["init_from"]["fingerprint"] == "sha256:" + fingerprint(before).hex()
    command = training["commands"][0]  # the exact command line
    assert command.startswith("python -m train ") and "--config train/configs/finetune.yaml" in command
    vals = training["history"]
    assert vals[0]["step"] == 0 and vals[0]["qat"]  # the base model itself on the new source
    assert vals[-1]["qat"] and vals[-1]["step"] > 0  # QAT again before the export
    assert vals[-1]["val_bits_per_byte"] < vals[0]["val_bits_per_byte"] - 0.05
    assert 0.25 * 60 <= training["trained_seconds"] < 0.3 * 60 + 10 and manifest["metrics"]["exact_rate"] == 1.0


def test_release_preset_runs_a_few_steps_and_exports_with_its_decode_window(ray_head, tmp_path):
    from nbmf.artifact import read_manifest

    p = train(ray_head, "--config", "train/configs/release.yaml", "data.source=data/sample", "data.train_records=240",
              "data.val_records=16", "data.tokenizer_records=400", "optim.max_steps=6", "optim.warmup=1",
              "run.val_every=3", f"run.storage_path={tmp_path}", "run.name=release", "export.bench_records=4",
              "wandb.enabled=false")
    manifest = read_manifest(p.stdout.strip().splitlines()[-1])
    arch = manifest["architecture"]
    assert (arch["d_model"], arch["n_layers"], arch["n_heads"], arch["context"]) == (128, 2, 4, 128)
    training = manifest["training"]
    assert training["config"]["model"]["context"] == 256 and training["steps"] == manifest["metrics"]["steps"] == 6
    assert [(h["step"], h["qat"]) for h in training["history"]] == [(3, False), (6, True)]  # QAT: last 20%
    assert training["init_from"] is None and len(training["commands"]) == 1
    assert manifest["fallback"]["dictionary"] == "zstd.dict" and manifest["metrics"]["exact_rate"] == 1.0


def test_the_wall_clock_budget_stops_with_a_checkpoint_and_resume_finishes(ray_head, tmp_path):
    args = ["--config", "train/configs/tiny.yaml", f"run.storage_path={tmp_path}", "run.name=budget",
            "export.enabled=false", "wandb.enabled=false"]
    first = train(ray_head, *args, "run.max_minutes=0.01")
    m = json.loads((tmp_path / "budget" / "result.json").read_text())["metrics"]
    assert m["stopped"] == "max_minutes" and 0 < m["step"] < m["total_steps"]
    assert "--resume" in first.stdout.strip().splitlines()[-1]
    train(ray_head, *args, "run.max_minutes=0", "--resume")
    done = json.loads((tmp_path / "budget" / "result.json").read_text())["metrics"]
    assert done["final"] and done["step"] == done["total_steps"] == m["total_steps"]
    assert done["resumed_from"] == [m["step"]]
