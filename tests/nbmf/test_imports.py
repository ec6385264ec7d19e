"""Import hygiene, checked in fresh interpreters: `nbmf` never imports ray, and decoding never imports torch."""
from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import textwrap

import nbmf

# The training/export side of the package: these may import torch at module level (never ray).
TORCH_MODULES = {"nbmf.export", "nbmf.models.model", "nbmf.models.quant"}


def run_python(code: str, env_drop=("NBMF_MODEL_DIR",)) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_encode_decode_imports_neither_ray_nor_torch():
    r = run_python("""
        import sys
        import nbmf
        assert nbmf.decode(nbmf.encode("x")) == "x"
        loaded = [m for m in ("ray", "torch") if m in sys.modules]
        assert not loaded, loaded
    """)
    assert r.returncode == 0, r.stderr


def test_neural_decode_imports_neither_ray_nor_torch():
    """With the repository's released model: a neural blob is written and read without torch."""
    r = run_python("""
        import sys
        import nbmf
        reg = nbmf.default_registry()
        assert reg.current != "stub", reg.current
        record = {"role": "user", "content": "Please book a table for two at seven tonight, by the window."}
        blob = nbmf.encode(record)
        assert nbmf.inspect(blob).version == reg.current, nbmf.inspect(blob)
        assert nbmf.decode(blob) == record
        loaded = [m for m in ("ray", "torch") if m in sys.modules]
        assert not loaded, loaded
    """)
    assert r.returncode == 0, r.stderr


def test_cli_imports_neither_ray_nor_torch(tmp_path):
    src = tmp_path / "note.txt"
    src.write_text("the user prefers metric units")
    r = run_python(f"""
        import sys
        from nbmf.cli import main
        assert main(["encode", {str(src)!r}, "-o", {str(tmp_path / "b")!r}]) == 0
        assert main(["decode", {str(tmp_path / "b")!r}, "-o", {str(tmp_path / "c")!r}]) == 0
        loaded = [m for m in ("ray", "torch") if m in sys.modules]
        assert not loaded, loaded
    """)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "c").read_text() == "the user prefers metric units"


def test_no_nbmf_module_imports_ray_and_only_the_training_side_imports_torch():
    modules = sorted(m.name for m in pkgutil.walk_packages(nbmf.__path__, "nbmf.") if m.name != "nbmf.__main__")
    assert TORCH_MODULES <= set(modules), "a torch module was renamed: update TORCH_MODULES"
    decode_side = [m for m in modules if m not in TORCH_MODULES]
    r = run_python(f"""
        import importlib, sys
        for name in {decode_side!r}:
            importlib.import_module(name)
            assert "torch" not in sys.modules, "importing " + name + " imported torch"
        for name in {sorted(TORCH_MODULES)!r}:
            importlib.import_module(name)
        assert "ray" not in sys.modules, "an nbmf module imports ray"
    """)
    assert r.returncode == 0, r.stderr
