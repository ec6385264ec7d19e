"""Where the default registry finds its model, and that it never encodes with the stub without saying so.

The wheel test builds the real wheel and runs it outside the repository, as a new user would after
``pip install .``: the released model comes with it, so encode writes v1 and the golden blobs decode.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

import nbmf
from helpers.golden import read_index
from nbmf import modeldir
from nbmf.registry import Registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(modeldir, "_warned", set())


def test_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv(modeldir.ENV, str(tmp_path / "env"))
    assert modeldir.default_model_dir() == tmp_path / "env"  # 1. the env var, even before it exists
    monkeypatch.delenv(modeldir.ENV)
    assert modeldir.default_model_dir() == ROOT / "models"  # 2. the source checkout's models/
    monkeypatch.setattr(modeldir, "SOURCE_ROOT", tmp_path)  # as installed: no pyproject.toml above nbmf/
    (tmp_path / "models").mkdir()
    assert modeldir.default_model_dir() == modeldir.PACKAGED  # 3. what the wheel ships


def test_the_packaged_registry_is_the_released_one():
    """nbmf/released (package data) holds what models/ holds: the same CURRENT and versions."""
    assert modeldir.PACKAGED.is_dir()
    assert modeldir.current(modeldir.PACKAGED) == modeldir.current(ROOT / "models") == "v5"
    assert modeldir.versions(modeldir.PACKAGED) == modeldir.versions(ROOT / "models")


@pytest.mark.parametrize("make", ["missing", "empty", "versions-without-current"])
def test_no_model_warns_once_and_says_where(tmp_path, monkeypatch, fresh_warnings, make):
    d = tmp_path / "models"
    if make != "missing":
        d.mkdir()
    if make == "versions-without-current":
        (d / "v1").mkdir()
        (d / "v1" / "manifest.json").write_text("{}")
    monkeypatch.setenv(modeldir.ENV, str(d))
    with pytest.warns(modeldir.NoModelWarning, match="NBMF_MODEL_DIR") as caught:
        reg = Registry.default()
    assert str(d) in str(caught[0].message)
    assert reg.current == "stub" and reg.inspect(reg.encode("x")).version == "stub"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Registry.default()  # said once per process, not on every registry


def test_a_deliberate_stub_current_does_not_warn(tmp_path, monkeypatch, fresh_warnings):
    (tmp_path / "CURRENT").write_text("stub\n")
    monkeypatch.setenv(modeldir.ENV, str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Registry.default().current == "stub"


def test_a_current_model_that_cannot_load_warns(tmp_path, fresh_warnings):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "manifest.json").write_text("{}")  # not a loadable artifact
    (tmp_path / "CURRENT").write_text("v1\n")
    reg = Registry(tmp_path)
    with pytest.warns(modeldir.NoModelWarning, match="v1 cannot load"):
        blob = reg.encode("writes go on")
    assert reg.inspect(blob).version == "stub" and reg.stats.fallbacks["v1:unavailable"] == 1


def test_the_wheel_ships_the_model_and_encodes_with_it_outside_the_repository(tmp_path):
    src = tmp_path / "src"  # a clean copy: an in-tree build/ left by an earlier build would hide a regression
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("nbmf", "train", "tune", "serve", "pipeline", "models"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=skip)
    out = tmp_path / "wheel"
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    (wheel,) = out.glob("nbmf-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(site)
    for v in ("v1", "v2", "v3"):
        manifest = json.loads((ROOT / "models" / v / "manifest.json").read_text())
        assert {"nbmf/released/CURRENT", f"nbmf/released/{v}/manifest.json"} <= names
        assert {f"nbmf/released/{v}/{name}" for name in manifest["files"]} <= names
    assert not any(n.startswith("models/") for n in names)  # nothing dropped into site-packages' top level
    golden = ROOT / "tests" / "golden" / "released"
    index = read_index(golden)
    first = index[0]
    assert nbmf.inspect((golden / first["file"]).read_bytes()).version == "v1"
    code = ("import sys, warnings; warnings.simplefilter('error', UserWarning); import nbmf, pathlib\n"
            "assert nbmf.__file__.startswith(sys.argv[1]), nbmf.__file__\n"
            "blob = nbmf.encode({'role': 'user', 'content': 'Book a table for two at 7pm.'})\n"
            "print(nbmf.inspect(blob).version)\n"
            "print(repr(nbmf.decode(pathlib.Path(sys.argv[2]).read_bytes())))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NBMF_MODEL_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    r = subprocess.run([sys.executable, "-c", code, str(site), str(golden / first["file"])], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    version, decoded = r.stdout.splitlines()
    assert version == "v5"  # the released CURRENT (v5: v4 trained on, its match model refitted, body layout 2)
    assert decoded == repr(nbmf.decode((golden / first["file"]).read_bytes()))
