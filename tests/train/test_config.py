"""train.jobconfig: YAML presets + dotted overrides into frozen dataclasses; one ConfigError per bad config."""
import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest

from train.jobconfig import ConfigError, from_dict, load_config, parse_overrides, to_dict


@dataclass(frozen=True)
class Inner:
    width: int = 8
    rate: float = 0.5
    tags: tuple[str, ...] = ()
    mode: Literal["fast", "slow"] = "fast"


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    enabled: bool = True
    inner: Inner = field(default_factory=Inner)
    resources: dict[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    limit: int | None = None


@dataclass(frozen=True)
class Checked:
    n: int = 1

    def __post_init__(self):
        if self.n < 1:
            raise ValueError("n must be >= 1")


@dataclass(frozen=True)
class Required:
    path: str


def test_defaults_and_nested_values():
    cfg = from_dict(Outer, {"name": "y", "inner": {"width": 3, "tags": ["a", "b"]}})
    assert cfg == Outer(name="y", inner=Inner(width=3, tags=("a", "b")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "z"


@pytest.mark.parametrize("override, expect", [
    ("inner.rate=1e-3", 0.001),  # YAML 1.1 reads 1e-3 as a string: floats accept numeric strings
    ("inner.rate=2", 2.0),  # ints widen to float
    ("inner.rate=.25", 0.25),
])
def test_float_overrides(override, expect):
    cfg = from_dict(Outer, {}, [override])
    assert cfg.inner.rate == expect and isinstance(cfg.inner.rate, float)


def test_overrides_win_over_file_and_reach_dicts(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("# python -m something --config c.yaml\nname: file\ninner: {width: 4}\nresources: {CPU: 2}\n")
    cfg = load_config(Outer, p, ["name=cli", "inner.mode=slow", "resources.GPU=1", "limit=null", "enabled=false"])
    assert (cfg.name, cfg.inner.width, cfg.inner.mode, cfg.enabled) == ("cli", 4, "slow", False)
    assert cfg.resources == {"CPU": 2.0, "GPU": 1.0}  # overrides merge into the file's mapping
    assert from_dict(Outer, {}, ["resources.GPU=1"]).resources == {"GPU": 1.0}  # a given mapping replaces the default
    assert cfg.limit is None


def test_every_problem_in_one_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("nmae: 1\nenabled: yes-please\ninner: {width: 2.5, tags: [1], mode: medium}\nlimit: many\n")
    with pytest.raises(ConfigError) as info:
        load_config(Outer, p, ["inner.colour=red", "broken"])
    problems = info.value.problems
    assert any(s.startswith("nmae: unknown key (did you mean 'name'?)") for s in problems)
    assert any(s.startswith("enabled: expected bool") for s in problems)
    assert any(s.startswith("inner.width: expected int") for s in problems)
    assert any(s.startswith("inner.tags[0]: expected str") for s in problems)
    assert any(s.startswith("inner.mode: expected one of ['fast', 'slow']") for s in problems)
    assert any(s.startswith("limit: expected int | None") for s in problems)
    assert any(s.startswith("inner.colour: unknown key") for s in problems)
    assert any("'broken'" in s and "dotted.key=value" in s for s in problems)
    assert len(problems) == 8
    assert str(p) in str(info.value) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("data, fragment", [
    ({"n": 0}, "n must be >= 1"),  # the dataclass's own validation
    ({"n": True}, "expected int"),  # bool is not an int here
])
def test_invalid_values(data, fragment):
    with pytest.raises(ConfigError, match=fragment):
        from_dict(Checked, data)


def test_required_field_and_non_mapping():
    with pytest.raises(ConfigError, match="path: required"):
        from_dict(Required, {})
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(Outer, ["not", "a", "mapping"])


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("inner: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, bad)


def test_round_trip_through_plain_dict():
    cfg = from_dict(Outer, {}, ["inner.tags=[a]", "limit=3"])
    plain = to_dict(cfg)
    assert plain["inner"]["tags"] == ["a"]
    assert from_dict(Outer, plain) == cfg


def test_parse_overrides_nests():
    tree, problems = parse_overrides(["a.b.c=1", "a.d=[1, 2]", "e=text with = sign"])
    assert tree == {"a": {"b": {"c": 1}, "d": [1, 2]}, "e": "text with = sign"}
    assert problems == []


def test_docstring_examples_run():
    """The module's doctest (it left nbmf/, whose doctests pytest collects, for train/, whose it does not)."""
    import doctest

    import train.jobconfig

    result = doctest.testmod(train.jobconfig, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
