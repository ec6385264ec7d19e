"""The main job's config: --config FILE, key=value overrides, --print-config, and the paths a submitted job refuses."""
import json

import pytest
import yaml

from pipeline.main import ROOT, PipelineConfig, main
from train.storage import JOB_ENV


def test_the_spelled_out_defaults_are_the_embedded_ones(capsys):
    assert main(["--print-config"]) == 0
    embedded = yaml.safe_load(capsys.readouterr().out)
    assert embedded == yaml.safe_load((ROOT / "pipeline" / "configs" / "local.yaml").read_text())
    assert embedded == {k: v for k, v in PipelineConfig().__dict__.items()}


def test_overrides_and_the_skip_training_flag(capsys, tmp_path):
    assert main(["--config", str(ROOT / "pipeline" / "configs" / "local.yaml"), "--skip-training", "--print-config",
                 "adapt_minutes=2.5", f"out={tmp_path}"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["adapt_minutes"] == 2.5 and cfg["skip_training"] is True and cfg["out"] == str(tmp_path)
    assert PipelineConfig(out=str(tmp_path)).path("out") == tmp_path
    assert PipelineConfig().path("sample") == ROOT / "data" / "sample"


@pytest.mark.parametrize("args,says", [
    (["bogus=1"], "bogus: unknown key"),
    (["adapt_minutes=soon"], "adapt_minutes"),
    (["out=s3://bucket/runs"], "out: 's3://bucket/runs' is a URI"),
])
def test_bad_configs_are_usage_errors_that_say_why(capsys, args, says):
    assert main(["--print-config", *args]) == 2
    assert says in capsys.readouterr().err


def test_a_submitted_job_needs_an_absolute_out(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(JOB_ENV, json.dumps({"runtime_env": {"working_dir": "."}}))
    assert main(["--print-config"]) == 2
    err = capsys.readouterr().err
    assert "out: 'runs/pipeline' is a relative path inside a submitted Ray job" in err
    assert "sample" not in err and "models" not in err  # inputs uploaded with the job's working dir
    assert main(["--print-config", f"out={tmp_path}"]) == 0
