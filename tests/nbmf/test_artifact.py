"""Hostile model artifacts: whatever the files hold, loading raises ArtifactError and nothing crashes.

Every hostile copy has its manifest's hashes recomputed (anyone can do that), so these tests reach the checks
behind the hashes: the manifest's fields, the weights' names, shapes, dtypes and value ranges, the tokenizer.
Copies that would run the kernels on bad tables, were they accepted, load in a subprocess: a regression there
is a failed test, not a dead pytest.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from nbmf import artifact, modeldir
from nbmf.artifact import FILES, MANIFEST, TOKENIZER, WEIGHTS, load_artifact, read_manifest, relabel, sha256_file
from nbmf.errors import ArtifactError
from nbmf.models.config import ModelConfig
from nbmf.runtime import intmodel
from nbmf.runtime.intmodel import PARAMS, RANGES, IntModel, ParamsError

V1 = modeldir.PACKAGED / "v1"  # transformer: its conv and recurrent groups are empty
CONV = ("taps", "taps_m", "taps_s", "dilation", "conv_lut")
RECURRENT = ("zc", "zc_m", "zc_s", "sig_lut")
LUTS = ("attn_lut", "head_lut")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """An artifact in which each array is non-empty: the packaged v1, and tiny cnn and hybrid ones."""
    from helpers.artifacts import tiny_artifact

    d = tmp_path_factory.mktemp("families")
    return {"transformer": V1, "cnn": tiny_artifact(d / "cnn", family="cnn", steps=4),
            "hybrid": tiny_artifact(d / "hybrid", family="hybrid", steps=4)}


def source_of(name: str, sources) -> Path:
    return sources["cnn" if name in CONV else "hybrid" if name in RECURRENT else "transformer"]


def hostile_copy(src: Path, dst: Path, params=None, tokenizer=None, manifest=None) -> Path:
    """A copy of ``src`` whose arrays (a dict), tokenizer JSON (a dict) or manifest (a dict, after the hashes are
    recomputed) the given functions edit in place."""
    shutil.copytree(src, dst)
    if params is not None:
        p = load_file(str(src / WEIGHTS))
        params(p)
        save_file(p, str(dst / WEIGHTS))
    if tokenizer is not None:
        t = json.loads((src / TOKENIZER).read_text(encoding="utf-8"))
        tokenizer(t)
        (dst / TOKENIZER).write_text(json.dumps(t), encoding="utf-8")
    m = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    m["files"] = {name: sha256_file(dst / name) for name in FILES}
    if manifest is not None:
        manifest(m)
    (dst / MANIFEST).write_text(json.dumps(m), encoding="utf-8")
    return dst


def test_a_faithful_copy_loads(tmp_path):
    """The harness itself: a copy with nothing edited loads (so each refusal below is the edit's)."""
    assert load_artifact(hostile_copy(V1, tmp_path / "a", params=lambda p: None))[1].vocab_size == 2048


def test_every_array_has_a_bound():
    """A new array must come with its value bounds (or a structural check: the three below)."""
    assert set(RANGES) | {"mixer_type", "mixer_idx", "dilation"} == set(PARAMS)


# -- the weights: one hostile copy per array and kind of damage --------------------------------------------
def _out_of_range(p: dict, name: str) -> None:
    a = p[name]
    flat = a.reshape(-1)
    if name == "mixer_type":
        flat[0] = 1  # a conv layer where the architecture has attention
    elif name == "mixer_idx":
        flat[-1] = 7  # an attention layer index past the group
    elif name == "dilation":
        flat[-1] += 1
    else:
        lo, hi, _ = RANGES[name]
        flat[-1] = lo - 1 if np.iinfo(a.dtype).max < hi + 1 else hi + 1  # int8 weights: -128


def _damages():
    for name in PARAMS:
        yield name, "missing", lambda p, k=name: p.pop(k)
        if name in LUTS:  # any length in [1, MAX_LUT] is a shape; empty is the one the kernels cannot take
            yield name, "empty", lambda p, k=name: p.__setitem__(k, p[k][:0])
            yield name, "increasing", lambda p, k=name: p[k].__setitem__(-1, p[k][-2] + 1)
        else:
            yield name, "shape", lambda p, k=name: p.__setitem__(k, np.concatenate([p[k].reshape(-1)] * 2)[:p[k].size + 1])
        yield name, "float32", lambda p, k=name: p.__setitem__(k, p[k].astype(np.float32))
        yield name, "uint64", lambda p, k=name: p.__setitem__(k, p[k].astype(np.uint64))
        yield name, "out of range", lambda p, k=name: _out_of_range(p, k)


DAMAGES = list(_damages())


@pytest.mark.parametrize("name, damage, edit", DAMAGES, ids=[f"{n}-{d}" for n, d, _ in DAMAGES])
def test_a_damaged_array_is_refused_by_name(sources, tmp_path, name, damage, edit):
    bad = hostile_copy(source_of(name, sources), tmp_path / "v1", params=edit)
    with pytest.raises(ArtifactError, match=rf"{WEIGHTS}.*\b{name}\b"):
        load_artifact(bad)


def test_an_extra_array_is_refused(tmp_path):
    bad = hostile_copy(V1, tmp_path / "v1", params=lambda p: p.__setitem__("payload", np.zeros(1 << 16, np.int8)))
    with pytest.raises(ArtifactError, match="payload"):
        load_artifact(bad)


@pytest.mark.parametrize("name, data", [(WEIGHTS, d) for d in (b"", b"\x00" * 8, b"not a safetensors file at all",
                                                             b"\xff" * 8 + b"{}")]
                         + [(TOKENIZER, d) for d in (b"", b"{", b"\xff\xfe\x00", b"[]", b"null", b"{" * 100_000)])
def test_a_file_that_is_not_what_it_should_be_is_refused(tmp_path, name, data):
    """A weights file that is no safetensors, a tokenizer file that is no tokenizer, hashes recomputed."""
    def garbage(m):
        (tmp_path / "v1" / name).write_bytes(data)
        m["files"][name] = sha256_file(tmp_path / "v1" / name)

    with pytest.raises(ArtifactError, match=name):
        load_artifact(hostile_copy(V1, tmp_path / "v1", manifest=garbage))


def test_intmodel_checks_what_it_is_handed(sources):
    """IntModel itself refuses (export and tests build it from arrays): ParamsError, an ArtifactError and a
    ValueError, listing every problem at once."""
    _, cfg, model, _ = load_artifact(V1)
    params = dict(model.params, slopes=-model.params["slopes"], norm_k=np.array(0, np.int64))
    with pytest.raises(ParamsError, match="slopes.*norm_k|norm_k.*slopes") as e:
        IntModel(cfg, params)
    assert isinstance(e.value, ArtifactError) and isinstance(e.value, ValueError)


RUN_IT = r"""
import sys
from nbmf.codecs.neural import load_codec
from nbmf.errors import ArtifactError
try:
    codec = load_codec(sys.argv[1], threads=1)
except ArtifactError as e:
    print("refused:", e)
    sys.exit(0)
raws = [b'{"id": 7, "text": "hello, world"}' * 30, "h\u00e9llo \u2713".encode()]
bodies = codec.encode_many([(r, 0) for r in raws])
codec.decode_many([(b, 0, len(r)) for b, r in zip(bodies, raws)])
print("loaded and ran")
"""

# what the kernels index or divide by without a check: accepted, these read or write past an array
RISKY = [(n, d, e) for n, d, e in DAMAGES if (n, d) in {
    ("mixer_idx", "out of range"), ("mixer_type", "out of range"), ("attn_lut", "empty"), ("head_lut", "empty")}]


@pytest.mark.parametrize("name, damage, edit", RISKY, ids=[f"{n}-{d}" for n, d, _ in RISKY])
def test_a_process_given_a_risky_artifact_survives(sources, tmp_path, name, damage, edit):
    bad = hostile_copy(source_of(name, sources), tmp_path / "v1", params=edit)
    p = subprocess.run([sys.executable, "-c", RUN_IT, str(bad)], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, NUMBA_NUM_THREADS="1"))
    assert p.returncode == 0, f"the process died (return code {p.returncode}):\n{p.stderr[-2000:]}"
    assert p.stdout.startswith("refused:") and name in p.stdout, p.stdout[-2000:]


# -- the manifest -------------------------------------------------------------------------------------------
# names that reach tmp_path/outside/x from tmp_path/src/v1 (OUTSIDE: its absolute path), or no plain name at all
OUTSIDE = "<absolute path of outside/x>"
BAD_NAMES = ["../../outside/x", OUTSIDE, "sub/../../../outside/x", "sub/weights.safetensors", "weights.safetensors/..",
             ".", "", "tokenizer.json\x00", "WEIGHTS.SAFETENSORS", "manifest.json"]


_sinks: list[list[str]] = []


def _audit(event, args):
    if _sinks and event in ("open", "os.listdir", "os.scandir", "shutil.copyfile", "os.mkdir", "os.rename"):
        for sink in _sinks:
            sink.extend(str(a) for a in args if isinstance(a, (str, bytes, os.PathLike)))


@contextmanager
def opened_paths():
    """Every path the process opens, lists, copies or creates meanwhile: an audit hook sees any function that
    reads, not only the ones this module knows of. (Hooks cannot be removed: installed once, idle outside.)"""
    if not _sinks and _audit not in _installed:
        sys.addaudithook(_audit)
        _installed.append(_audit)
    seen: list[str] = []
    _sinks.append(seen)
    try:
        yield seen
    finally:
        _sinks.remove(seen)


_installed: list = []


@pytest.mark.parametrize("bad_name", BAD_NAMES)
def test_relabel_refuses_a_file_name_that_is_not_the_artifacts_own(tmp_path, bad_name):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_text("secret")
    name = str(outside / "x") if bad_name == OUTSIDE else bad_name
    src = hostile_copy(V1, tmp_path / "src" / "v1",
                       manifest=lambda m: m["files"].__setitem__(name, sha256_file(outside / "x")))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with opened_paths() as seen, pytest.raises(ArtifactError, match="an artifact holds only"):
        relabel(src, tmp_path / "dest" / "v2", "v2")
    with pytest.raises(ArtifactError):
        read_manifest(src)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    real = [Path(os.path.realpath(s)) for s in seen]  # '../' resolved: src/../x is outside src
    allowed = (src.resolve(), (tmp_path / "dest").resolve())
    assert [r for r in real if r.is_relative_to(tmp_path.resolve()) and not any(r.is_relative_to(a) for a in allowed)
            ] == []  # nothing read outside


def test_a_linked_file_is_refused_and_never_copied(tmp_path):
    src = hostile_copy(V1, tmp_path / "src", params=lambda p: None)
    outside = tmp_path / "outside.json"
    shutil.move(src / TOKENIZER, outside)
    (src / TOKENIZER).symlink_to(outside)
    with pytest.raises(ArtifactError, match="not a regular file"):
        read_manifest(src)
    with pytest.raises(ArtifactError, match="not a regular file"):
        modeldir.register(src, tmp_path / "models", "v1")
    assert not (tmp_path / "models" / "v1").exists()


def test_register_copies_the_listed_files_only(tmp_path):
    src = hostile_copy(V1, tmp_path / "src", params=lambda p: None)
    (src / "stray.bin").write_bytes(b"not part of the model")
    dest = modeldir.register(src, tmp_path / "models", "v1")
    assert sorted(p.name for p in dest.iterdir()) == sorted([MANIFEST, *FILES])


@pytest.mark.parametrize("where", ["same", "parent", "child"])
def test_relabel_never_replaces_its_own_source(tmp_path, where):
    src = hostile_copy(V1, tmp_path / "a" / "v1", params=lambda p: None)
    dest = {"same": src, "parent": src.parent, "child": src / "v2"}[where]
    with pytest.raises(ValueError, match="directory of its own"):
        relabel(src, dest, "v2")
    assert read_manifest(src)["version"] == "v1"


@pytest.mark.parametrize("text", [b"{", b"[]", b'"nbmf-model/1"', b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000,
                                  b'{"format": "nbmf-model/1"}', b'{"format": "nbmf-model/1", "files": []}',
                                  b'{"format": "nbmf-model/1", "files": {"weights.safetensors": 1, '
                                  b'"tokenizer.json": null}}', b'{"format": 1}'])
def test_a_malformed_manifest_is_refused(tmp_path, text):
    d = hostile_copy(V1, tmp_path / "v1", params=lambda p: None)
    (d / MANIFEST).write_bytes(text)
    with pytest.raises(ArtifactError, match=MANIFEST):
        load_artifact(d)


def test_a_huge_manifest_is_refused_unread(tmp_path):
    d = hostile_copy(V1, tmp_path / "v1", params=lambda p: None)
    with open(d / MANIFEST, "ab") as f:
        f.truncate(artifact.MAX_MANIFEST_BYTES + 1)  # sparse: no disk, and never read
    with opened_paths() as seen, pytest.raises(ArtifactError, match="larger than"):
        load_artifact(d)
    assert str(d / MANIFEST) not in seen


def _arch(**edit):
    return lambda m: m["architecture"].update(edit)


@pytest.mark.parametrize("edit", [
    _arch(d_model="128"), _arch(d_model=128.0), _arch(n_heads=True), _arch(d_model=0), _arch(n_layers=-1),
    _arch(d_model=130), _arch(vocab_size=1 << 40), _arch(context=1 << 20), _arch(context=1000), _arch(family="rnn"),
    _arch(mlp_mult=64, d_model=4096), _arch(kernel_size=0), _arch(surprise=1),
    lambda m: m["architecture"].pop("context"), lambda m: m.__setitem__("architecture", [1, 2]),
    lambda m: m.__setitem__("version", "../v1"), lambda m: m.__setitem__("version", "stub"),
    lambda m: m.__setitem__("encoder_id", 2), lambda m: m.__setitem__("encoder_id", "1"),
    lambda m: m["tokenizer"].__setitem__("vocab_size", 4096), lambda m: m["tokenizer"].__setitem__("file", "../t"),
    lambda m: m.__setitem__("tokenizer", None),
])
def test_a_manifest_that_does_not_describe_the_model_is_refused(tmp_path, edit):
    with pytest.raises(ArtifactError, match=MANIFEST):
        load_artifact(hostile_copy(V1, tmp_path / "v1", manifest=edit))


@pytest.mark.parametrize("layout", [3, 0, -1, True, "2", 2.0, None, [2]])
def test_a_body_layout_this_code_does_not_know_is_refused(tmp_path, layout):
    with pytest.raises(ArtifactError, match="body layout .* upgrade nbmf"):
        load_artifact(hostile_copy(V1, tmp_path / "v1", manifest=lambda m: m.__setitem__("body", layout)))


def test_the_body_layout_is_part_of_the_identity():
    """Artifacts exported before layout 2 name none: layout 1, the fingerprint they always had; layout 2 is
    another identity (its blobs bind another checksum), and new artifacts are written in it."""
    m = read_manifest(V1)
    assert "body" not in m and artifact.body_layout(m) == 1 and load_artifact(V1)[2].body_layout == 1
    assert artifact.fingerprint({**m, "body": 1}) == artifact.fingerprint(m) != artifact.fingerprint({**m, "body": 2})
    assert IntModel(load_artifact(V1)[1], load_artifact(V1)[2].params).body_layout == 2  # never exported: current


@pytest.mark.parametrize("change, match", [
    (dict(d_model=0), "d_model must lie"), (dict(d_model=130), "multiple of n_heads"), (dict(n_heads=0), "n_heads"),
    (dict(vocab_size=True), "vocab_size must be an integer"), (dict(family="cnn", n_layers=20), "dilation"),
    (dict(mlp_mult=64, d_model=512), "mlp_mult \\* d_model"), (dict(family=None), "family"),
])
def test_model_config_refuses_nonsense(change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(ModelConfig(), **change)


def test_the_runtime_refuses_a_window_past_its_exactness_bound():
    """_attention: W * 2**15 * 127 < 2**31; a cnn may use a longer context (it has no attention)."""
    with pytest.raises(ParamsError, match="exact window"):
        intmodel.check_config(ModelConfig(context=intmodel.MAX_WINDOW + 1))
    intmodel.check_config(ModelConfig(context=intmodel.MAX_WINDOW))
    intmodel.check_config(ModelConfig(family="cnn", context=4 * intmodel.MAX_WINDOW))


# -- the tokenizer ------------------------------------------------------------------------------------------
def _model(**edit):
    return lambda t: t["model"].update(edit)


def _vocab(fn):
    return lambda t: fn(t["model"]["vocab"])


@pytest.mark.parametrize("edit", [
    lambda t: t.__setitem__("normalizer", {"type": "Lowercase"}),
    lambda t: t["pre_tokenizer"].__setitem__("add_prefix_space", True),
    lambda t: t.__setitem__("pre_tokenizer", None),
    lambda t: t.__setitem__("truncation", {"direction": "Right", "max_length": 8, "strategy": "LongestFirst",
                                           "stride": 0}),
    lambda t: t.__setitem__("padding", {"strategy": {"Fixed": 512}, "direction": "Right", "pad_to_multiple_of": None,
                                        "pad_id": 0, "pad_type_id": 0, "pad_token": "!"}),
    lambda t: t.__setitem__("added_tokens", [{"id": 2048, "content": "<s>", "single_word": False, "lstrip": False,
                                              "rstrip": False, "normalized": False, "special": True}]),
    _model(continuing_subword_prefix="##"),
    _vocab(lambda v: v.__setitem__("\u4e2d", v.pop(max(v, key=v.get)))),  # a character that stands for no byte
    _vocab(lambda v: v.__setitem__("", v.pop(max(v, key=v.get)))),  # a token of no bytes
    _vocab(lambda v: v.__setitem__("zzzzzz", 1 << 20)),  # ids not dense
    lambda t: t.__setitem__("model", {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}),
    lambda t: t.__setitem__("model", 7),
    lambda t: t.clear(),
])
def test_a_tokenizer_whose_ids_would_not_spell_the_bytes_is_refused(tmp_path, edit):
    with pytest.raises(ArtifactError, match=TOKENIZER):
        load_artifact(hostile_copy(V1, tmp_path / "v1", tokenizer=edit))


def test_a_tokenizer_of_another_size_is_refused(tmp_path, sources):
    """The hybrid's tokenizer (384 ids) with v1's weights (2,048): a vocabulary mismatch, named."""
    def swap(m):
        shutil.copyfile(sources["hybrid"] / TOKENIZER, tmp_path / "v1" / TOKENIZER)
        m["files"][TOKENIZER] = sha256_file(tmp_path / "v1" / TOKENIZER)

    with pytest.raises(ArtifactError, match="ids, the model 2048"):
        load_artifact(hostile_copy(V1, tmp_path / "v1", manifest=swap))
