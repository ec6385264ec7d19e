"""Model artifact directories: integer weights, tokenizer and a manifest that describes and pins them.

    v1/
      manifest.json        version, architecture, quantization, tokenizer, training data hash, metrics,
                           and the sha256 of every other file
      weights.safetensors  integer runtime parameters (int8 weights, int64 multipliers and lookup tables)
      tokenizer.json       byte-level BPE
      zstd.dict            the classical fallback's zstd dictionary (nbmf.codecs.fallback); artifacts exported
                           before it existed have none and still load
      match.json           optional: the match model mixed into the neural tables (nbmf.runtime.match); part of the
                           model (its fingerprint covers it), so only a new version gets one (``attach_match``)

The manifest's "body" names the layout the neural bodies are stored in (nbmf.runtime.layouts.BODY_LAYOUTS; absent:
1, as every artifact exported before layout 2 existed). New artifacts and new versions get the current layout.

Loading verifies every hash before anything is used; nothing is unpickled. The bytes are not trusted for
being hashed (anyone can recompute a hash): ``load_artifact`` also checks the manifest's fields and types, the
weights' names, shapes, dtypes and value ranges (nbmf.runtime.intmodel.check_params) and the tokenizer, and
every failure is an ArtifactError naming the file and the problem.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

from nbmf.errors import ArtifactError
from nbmf.modeldir import MANIFEST, is_version_name, neural_id
from nbmf.models.config import ModelConfig

WEIGHTS = "weights.safetensors"
TOKENIZER = "tokenizer.json"
FORMAT = "nbmf-model/1"
DICTIONARY = "zstd.dict"
MATCH = "match.json"
FILES = (WEIGHTS, TOKENIZER)  # what every manifest lists: plain names in the artifact directory
OPTIONAL_FILES = (DICTIONARY, MATCH)  # what a manifest may list besides; nothing else
MODEL_FILES = (*FILES, MATCH)  # what the model's behaviour depends on: its fingerprint covers their hashes
MAX_MATCH_BYTES = 1 << 16  # match.json is read whole, so bounded: v2's is ~3 KB
MAX_DICTIONARY_BYTES = 1 << 22  # a dictionary is read whole, so bounded: 37x the 112,640 bytes one is trained to
MAX_MANIFEST_BYTES = 1 << 24  # v1's is 3 KB (metrics and training history); read whole, so bounded
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_DTYPES = ("I8", "I32", "I64")  # safetensors dtypes write_artifact writes (check_params says which array has which)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def encoder_id_of(version: str) -> int:
    """'v3' -> 3. Neural versions are named vN (N >= 1); id 0 is the stub (rule: nbmf.modeldir)."""
    return neural_id(version)


def write_artifact(out_dir, *, version: str, cfg: ModelConfig, int_model, tokenizer, metrics: dict,
                   data_hash: str, training: dict, dictionary: bytes | None = None,
                   dictionary_info: dict | None = None) -> Path:
    """Write the artifact directory; ``dictionary`` (nbmf.dictionary) ships the classical fallback's zstd
    dictionary with it, ``dictionary_info`` says how it was trained."""
    from safetensors.numpy import save_file

    from nbmf.runtime import layouts

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(int_model.storable(), str(out / WEIGHTS))
    tokenizer.save(out)
    manifest = {
        "format": FORMAT,
        "version": version,
        "encoder_id": encoder_id_of(version),
        "architecture": dataclasses.asdict(cfg),
        "quantization": {"weights": "int8 per output row, symmetric", "activations": "int8 per tensor",
                         "runtime": "integer-only (nbmf.runtime.kernels)"},
        "tokenizer": {"type": "byte-level BPE", "vocab_size": tokenizer.vocab_size, "file": TOKENIZER},
        "training_data": data_hash,
        "training": training,
        "metrics": metrics,
        "files": {name: sha256_file(out / name) for name in FILES},
        "body": layouts.BODY_LAYOUT,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if dictionary is not None:
        attach_dictionary(out, dictionary, dictionary_info or {})
    return out


def attach_dictionary(path, dictionary: bytes, about: dict) -> dict:
    """Add the classical fallback's zstd dictionary to the artifact at ``path``: the file, its sha256 in the
    manifest's "files", ``about`` (how it was trained) under "fallback". Returns the new manifest.

    The model's fingerprint does not change (it covers the weights and tokenizer only), so every blob the
    artifact wrote still decodes. A dictionary is never replaced: the fallback blobs written with it would not.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if DICTIONARY in manifest["files"]:
        raise ArtifactError(f"{path} already ships a {DICTIONARY}; a dictionary is never replaced (the fallback "
                            "blobs written with it would no longer decode): export a new version instead")
    if not dictionary or len(dictionary) > MAX_DICTIONARY_BYTES:
        raise ValueError(f"a dictionary is 1 to {MAX_DICTIONARY_BYTES} bytes, not {len(dictionary)}")
    (path / DICTIONARY).write_bytes(dictionary)
    manifest["files"][DICTIONARY] = sha256_file(path / DICTIONARY)
    manifest["fallback"] = {"codec": "zstd", "dictionary": DICTIONARY, "bytes": len(dictionary), **about}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return read_manifest(path)


def attach_match(path, match_json: bytes, about: dict, command: str | None = None, replace: bool = False) -> dict:
    """Add a match model (nbmf.runtime.match.to_json) to the artifact at ``path``: the file, its sha256 in the
    manifest's "files", ``about`` (how it was fitted, what it measured) under "match", and ``command`` (the one
    that made it) at the end of training.commands. Returns the new manifest.

    The match model changes the tables, so the artifact's fingerprint changes with it: attach it to a fresh copy
    registered as a new version (``relabel``), never to a registered one, whose blobs would no longer decode.
    Being a new version, it is also written in the current body layout (``layouts.BODY_LAYOUT``).
    ``replace``: the copy's match model (taken from the version it was copied from) gives way to this one.
    """
    from nbmf.runtime import layouts, match

    path = Path(path)
    manifest = read_manifest(path)
    if MATCH in manifest["files"] and not replace:
        raise ArtifactError(f"{path} already ships a {MATCH}; a match model is never replaced: export a new version")
    if len(match_json) > MAX_MATCH_BYTES:
        raise ValueError(f"a match model is at most {MAX_MATCH_BYTES} bytes, not {len(match_json)}")
    match.from_json(match_json, MATCH)  # refuse what load would refuse, before it is written
    (path / MATCH).write_bytes(match_json)
    manifest["files"][MATCH] = sha256_file(path / MATCH)
    manifest["match"] = {"file": MATCH, **about}
    manifest["body"] = layouts.BODY_LAYOUT
    if command:
        training = manifest.setdefault("training", {})
        training["commands"] = [*training.get("commands", []), command]
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return read_manifest(path)


def read_match(path, manifest: dict):
    """The match model (nbmf.runtime.match.Match) of the artifact at ``path`` (its verified ``manifest``), None when
    it ships none. The bytes parsed are the ones hashed; ArtifactError if they are not, or are not a match model."""
    from nbmf.runtime import match

    data = read_listed(path, manifest, MATCH, MAX_MATCH_BYTES)
    if data is None:
        return None
    return match.from_json(data, str(Path(path) / MATCH))


def _manifest_problems(manifest) -> list[str]:
    """What makes a parsed manifest unusable before any file it lists is opened."""
    if not isinstance(manifest, dict):
        return [f"it holds a {type(manifest).__name__}, not an object"]
    if manifest.get("format") != FORMAT:
        return [f"unsupported artifact format {manifest.get('format')!r} (expected {FORMAT})"]
    files = manifest.get("files")
    if not isinstance(files, dict):
        return ["it has no 'files' object (the sha256 of every file)"]
    problems = [f"it lists no hash for {name}; the artifact is incomplete" for name in FILES if name not in files]
    problems += [f"it lists {name!r}: an artifact holds only {', '.join(FILES + OPTIONAL_FILES)}, by plain name"
                 for name in files if name not in FILES + OPTIONAL_FILES]  # '../x', '/etc/x', 'sub/x': nothing
    # outside the directory is read or copied
    problems += [f"the hash of {name} is {want!r}, not 'sha256:' and 64 hex digits" for name, want in files.items()
                 if name in FILES + OPTIONAL_FILES and not (isinstance(want, str) and _SHA256.fullmatch(want))]
    if body_layout(manifest) is None:
        problems.append(f"its body layout {manifest['body']!r:.40} is none this nbmf knows: upgrade nbmf")
    return problems


def body_layout(manifest: dict) -> int | None:
    """The layout the artifact's neural bodies are stored in (nbmf.runtime.layouts): its manifest's "body", 1 when
    it names none (exported before layout 2); None when it names one this code does not know."""
    from nbmf.runtime.layouts import BODY_LAYOUTS

    layout = manifest.get("body", 1)
    return layout if type(layout) is int and layout in BODY_LAYOUTS else None


def read_manifest(path) -> dict:
    """The manifest of an artifact directory, with every listed file's hash verified."""
    path = Path(path)
    f = path / MANIFEST
    try:
        if f.stat().st_size > MAX_MANIFEST_BYTES:
            raise ArtifactError(f"{f} is larger than {MAX_MANIFEST_BYTES} bytes: not a model manifest")
        manifest = json.loads(f.read_bytes())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is not a model artifact: it has no {MANIFEST}") from None
    except (OSError, ValueError, RecursionError) as e:  # ValueError: JSON and UTF-8 errors
        raise ArtifactError(f"{f} is not valid JSON ({type(e).__name__}: {e}); "
                            "restore the artifact from its source") from None
    problems = _manifest_problems(manifest)
    if problems:
        raise ArtifactError(f"{f}: " + "; ".join(problems))
    for name, want in manifest["files"].items():
        f = path / name
        if f.is_symlink() or not f.is_file():  # a link would read (and relabel copy) a file outside the artifact
            raise ArtifactError(f"{path}: {name} is missing or not a regular file; "
                                "restore the artifact from its source")
        got = sha256_file(f)
        if got != want:
            raise ArtifactError(f"{path}: {name} has {got[:19]}..., the manifest says {want[:19]}...: "
                                "the file was modified or corrupted; refusing to load it")
    return manifest


def copy_verified(src, dest) -> dict:
    """Copy an artifact's manifest and the files it lists, nothing else, from ``src`` into the new directory
    ``dest``; verify both. Returns the manifest."""
    src, dest = Path(src), Path(dest)
    manifest = read_manifest(src)
    dest.mkdir(parents=True)
    for name in (MANIFEST, *manifest["files"]):
        shutil.copyfile(src / name, dest / name)
    read_manifest(dest)
    return manifest


def fingerprint(manifest: dict) -> bytes:
    """The model's identity (32 bytes): sha256 of what determines its behaviour, the artifact format, the
    architecture, the hashes of the weights, tokenizer and match model (when it ships one: an artifact without
    keeps the fingerprint it always had) and the body layout (when it is not 1: likewise), and nothing else (not
    the version name, not metrics: ``relabel`` keeps it; not the fallback's dictionary, which has its own,
    nbmf.codecs.fallback).
    Format-v2 blobs of the neural codec bind their content checksum to it."""
    files = manifest.get("files")
    if isinstance(files, dict):
        files = {name: want for name, want in files.items() if name in MODEL_FILES}
    core = {"format": manifest.get("format"), "architecture": manifest.get("architecture"), "files": files}
    if body_layout(manifest) != 1:
        core["body"] = manifest["body"]
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).digest()


def read_dictionary(path, manifest: dict) -> bytes | None:
    """The fallback's zstd dictionary of the artifact at ``path`` (its verified ``manifest``), None when it ships
    none. The bytes returned are the ones hashed: ArtifactError if they are not what the manifest says."""
    return read_listed(path, manifest, DICTIONARY, MAX_DICTIONARY_BYTES)


def read_listed(path, manifest: dict, name: str, max_bytes: int) -> bytes | None:
    """The bytes of optional file ``name`` of the artifact at ``path``, checked against the sha256 its verified
    ``manifest`` lists (None when it lists none): a regular file of at most ``max_bytes``, else ArtifactError."""
    want = manifest["files"].get(name)
    if want is None:
        return None
    f = Path(path) / name
    try:
        if f.is_symlink() or not f.is_file() or f.stat().st_size > max_bytes:
            raise ArtifactError(f"{f} is missing, not a regular file or larger than {max_bytes} bytes; "
                                "restore the artifact from its source")
        data = f.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{f} cannot be read ({e}); restore the artifact from its source") from None
    if "sha256:" + hashlib.sha256(data).hexdigest() != want:
        raise ArtifactError(f"{f} is not the file the manifest lists (sha256 {want[:19]}...): it was modified or "
                            "corrupted; refusing to load it")
    return data


def _config(manifest: dict, where: Path) -> ModelConfig:
    """The manifest's architecture: every ModelConfig field, nothing else (a missing one must not default)."""
    arch = manifest.get("architecture")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    if not isinstance(arch, dict) or set(arch) != fields:
        got = sorted(arch) if isinstance(arch, dict) else type(arch).__name__
        raise ArtifactError(f"{where}: 'architecture' must hold exactly {sorted(fields)}, got {got}")
    try:
        return ModelConfig(**arch)
    except ValueError as e:
        raise ArtifactError(f"{where}: {e}") from None


def _identity_problems(manifest: dict, cfg: ModelConfig) -> list[str]:
    """The version, encoder id and tokenizer fields against each other and the architecture."""
    version, tok = manifest.get("version"), manifest.get("tokenizer")
    if not (isinstance(version, str) and is_version_name(version) and version != "stub"):
        return [f"version {version!r} is not a neural version name (v1, v2, ...)"]
    problems = []
    eid = manifest.get("encoder_id")
    if type(eid) is not int or eid != neural_id(version):
        problems.append(f"encoder_id {eid!r} is not {version}'s, {neural_id(version)}")
    if not isinstance(tok, dict) or tok.get("file") != TOKENIZER or tok.get("vocab_size") != cfg.vocab_size:
        problems.append(f"'tokenizer' must name {TOKENIZER} with the architecture's vocab_size {cfg.vocab_size}, "
                        f"got {tok!r:.200}")
    return problems


def _read_weights(f: Path, cfg: ModelConfig) -> dict:
    """The weights' arrays, their names, shapes and dtypes checked from the header before any data is read."""
    from safetensors import safe_open

    from nbmf.runtime.intmodel import check_shapes

    try:
        with safe_open(str(f), framework="numpy") as st:
            slices = {k: st.get_slice(k) for k in st.keys()}
            check_shapes(cfg, {k: sl.get_shape() for k, sl in slices.items()})
            odd = [f"{k} ({sl.get_dtype()})" for k, sl in slices.items() if sl.get_dtype() not in _DTYPES]
            if odd:
                raise ArtifactError(f"arrays of a type the model does not use: {', '.join(odd)}")
            return {k: st.get_tensor(k) for k in slices}
    except ArtifactError as e:
        raise ArtifactError(f"{f}: {e}") from None
    except Exception as e:  # safetensors' parse errors, numpy's: whatever the file holds, it is refused
        raise ArtifactError(f"{f} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    except BaseException as e:  # a Rust panic (pyo3's PanicException is no Exception)
        if type(e).__module__ != "pyo3_runtime":
            raise
        raise ArtifactError(f"{f} is not a readable safetensors file (the reader panicked: {e})") from None


def load_artifact(path):
    """(manifest, ModelConfig, IntModel, Tokenizer) of a verified artifact directory. Anything the files hold
    that the runtime cannot use exactly is an ArtifactError, raised before a kernel runs."""
    from nbmf.runtime.intmodel import IntModel, check_config
    from nbmf.tokenizer import Tokenizer

    path = Path(path)
    manifest = read_manifest(path)
    cfg = _config(manifest, path / MANIFEST)
    problems = _identity_problems(manifest, cfg)
    if problems:
        raise ArtifactError(f"{path / MANIFEST}: " + "; ".join(problems))
    try:
        check_config(cfg)
    except ArtifactError as e:
        raise ArtifactError(f"{path / MANIFEST}: {e}") from None
    params = _read_weights(path / WEIGHTS, cfg)
    match = read_match(path, manifest)
    try:
        int_model = IntModel(cfg, params, match=match, body_layout=body_layout(manifest))
    except ArtifactError as e:  # check_params' problems name the array; say which file holds it
        raise ArtifactError(f"{path / WEIGHTS}: {e}") from None
    tokenizer = Tokenizer.load(path)
    if tokenizer.vocab_size != cfg.vocab_size:
        raise ArtifactError(f"{path / TOKENIZER} has {tokenizer.vocab_size} ids, the model {cfg.vocab_size}")
    return manifest, cfg, int_model, tokenizer


def relabel(src, dest, version: str, metrics: dict | None = None, training: dict | None = None) -> Path:
    """Copy a verified artifact under another encoder version name (registration picks the next free vN),
    with ``metrics`` (measured since the export, say) added to its manifest's, and ``training`` fields (where a
    search found it, say) added to its training record.

    Only the manifest changes: the hashed files are copied byte for byte, so the model is the same one.
    ``dest`` is replaced; it may neither hold nor lie inside ``src``.
    """
    src, dest = Path(src), Path(dest)
    encoder_id = encoder_id_of(version)
    a, b = src.resolve(), dest.resolve()
    if a == b or a.is_relative_to(b) or b.is_relative_to(a):
        raise ValueError(f"relabel copies {src} to a directory of its own, not to {dest}")
    read_manifest(src)  # before dest is touched
    if dest.exists():
        shutil.rmtree(dest)
    manifest = copy_verified(src, dest)
    manifest["version"], manifest["encoder_id"] = version, encoder_id
    manifest["metrics"] = {**manifest.get("metrics", {}), **(metrics or {})}
    if training:
        manifest["training"] = {**manifest.get("training", {}), **training}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    read_manifest(dest)
    return dest
