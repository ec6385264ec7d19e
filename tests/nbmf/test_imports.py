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


# What the core install leaves out (pyproject extras; nbmf/extras.py maps each to its extra).
OPTIONAL = ("pyarrow", "matplotlib", "yaml", "rich", "tqdm", "rapidfuzz", "brotli", "cryptography")


def test_encode_decode_and_the_codec_cli_load_no_optional_dependency(tmp_path):
    src = tmp_path / "note.txt"
    src.write_text("the user prefers metric units")
    r = run_python(f"""
        import sys
        import nbmf
        from nbmf.cli import main
        record = {{"role": "user", "content": "Please book a table for two at seven tonight."}}
        assert nbmf.decode(nbmf.encode(record, version="stub")) == record
        assert main(["encode", "--version", "stub", {str(src)!r}, "-o", {str(tmp_path / "b")!r}]) == 0
        assert main(["decode", {str(tmp_path / "b")!r}, "-o", {str(tmp_path / "c")!r}]) == 0
        loaded = [m for m in {OPTIONAL!r} if m in sys.modules]
        assert not loaded, loaded
        blob = nbmf.encode(record)  # the released neural model: numba, which imports yaml itself if present
        assert nbmf.decode(blob) == record and nbmf.inspect(blob).version != "stub"
        loaded = [m for m in {OPTIONAL!r} if m in sys.modules and m != "yaml"]
        assert not loaded, loaded
    """)
    assert r.returncode == 0, r.stderr


def test_the_library_imports_without_its_extras_and_names_the_missing_one():
    """With every optional module unimportable (a core-only install): all of nbmf imports, the codec works,
    and a feature that needs an extra says which one."""
    modules = sorted(m.name for m in pkgutil.walk_packages(nbmf.__path__, "nbmf.")
                     if m.name != "nbmf.__main__" and m.name not in TORCH_MODULES)
    r = run_python(f"""
        import importlib, sys
        for name in {OPTIONAL!r}:
            sys.modules[name] = None  # import of it raises ModuleNotFoundError, as when not installed
        for name in {modules!r}:
            importlib.import_module(name)
        import nbmf
        assert nbmf.decode(nbmf.encode("x")) == "x"
        from nbmf.extras import require
        for module, extra in [("pyarrow.parquet", "data"), ("tqdm", "data"), ("brotli", "bench"),
                              ("cryptography.hazmat.primitives.ciphers.aead", "data"),
                              ("matplotlib", "bench")]:
            try:
                require(module)
            except ModuleNotFoundError as e:
                assert f"pip install 'nbmf[{{extra}}]'" in str(e), str(e)
            else:
                raise AssertionError(module + " imported")
        from nbmf.bench.anchors import Brotli
        try:
            Brotli().compress(b"x")
        except ModuleNotFoundError as e:
            assert "nbmf[bench]" in str(e), str(e)
        else:
            raise AssertionError("Brotli without brotli")
    """)
    assert r.returncode == 0, r.stderr


def test_core_dependencies_are_the_codec_runtime():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    core = {d.partition("==")[0] for d in project["dependencies"]}
    # the range coder is nbmf.runtime.coder; zstandard decodes the neural versions' fallback bodies
    assert core == {"numpy", "numba", "tokenizers", "safetensors", "zstandard"}
    extras = project["optional-dependencies"]
    assert {"data", "bench"} <= set(extras) and "nbmf[data,bench,train,serve,client,test]" in extras["all"]
