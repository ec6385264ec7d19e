"""`python -m tune`'s command line without a search: --print-config, --resume's checks, concurrency from config."""
from pathlib import Path

import pytest
import yaml

from train.config import TrainJobConfig
from train.jobconfig import from_dict
from tune import config as tcfg
from tune.driver import main, max_concurrent

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "tune" / "configs" / "tiny.yaml")


def test_print_config_shows_the_resolved_search_and_training_preset(capsys):
    assert main(["--config", TINY, "--print-config", "search.max_concurrent_trials=3", "search.num_samples=6"]) == 0
    out = capsys.readouterr().out
    printed = yaml.safe_load(out)  # the commented training preset is YAML comments: the search config parses alone
    assert from_dict(tcfg.TuneJobConfig, printed) == tcfg.load(TINY, ["search.max_concurrent_trials=3",
                                                                       "search.num_samples=6"])
    assert printed["search"]["max_concurrent_trials"] == 3
    base = yaml.safe_load("\n".join(line[2:] for line in out.splitlines() if line.startswith("# ") and ":" in line
                                    and not line.startswith("# the training")))
    assert from_dict(TrainJobConfig, base).scaling.num_workers == 1  # tiny.yaml's train_overrides applied


def test_bad_overrides_exit_2_with_every_problem(capsys):
    assert main(["--config", TINY, "search.max_concurrent_trials=-1", "search.nmae=x"]) == 2
    err = capsys.readouterr().err
    assert "search.nmae: unknown key" in err


def test_negative_concurrency_is_a_config_error():
    from train.jobconfig import ConfigError

    with pytest.raises(ConfigError, match="max_concurrent_trials: 0"):
        tcfg.load(TINY, ["search.max_concurrent_trials=-2"])


def test_resume_needs_the_search_name(capsys):
    assert main(["--config", TINY, "--resume"]) == 2
    assert "search.name=<name>" in capsys.readouterr().err


def test_resume_of_a_search_that_never_ran_says_so(tmp_path):
    with pytest.raises(SystemExit, match="nothing to resume: no search 'ghost'"):
        main(["--config", TINY, "--resume", "search.name=ghost", f"search.storage_path={tmp_path}"])


def test_concurrency_from_the_config_needs_no_cluster():
    """Asked for N, the search runs N at once whatever the cluster holds now (an autoscaler adds nodes)."""
    base = tcfg.load(TINY)
    job = from_dict(TrainJobConfig, yaml.safe_load(open(base.train)), base.train_overrides)
    assert max_concurrent(job, 8) == 8  # no ray.init: ray.cluster_resources() would raise without one
