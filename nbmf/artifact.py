"""Model artifact directories: integer weights, tokenizer and a manifest that describes and pins them.

    v1/
      manifest.json        version, architecture, quantization, tokenizer, training data hash, metrics,
                           and the sha256 of every other file
      weights.safetensors  integer runtime parameters (int8 weights, int64 multipliers and lookup tables)
      tokenizer.json       byte-level BPE

Loading verifies every hash before anything is used; nothing is unpickled.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from nbmf.errors import ArtifactError
from nbmf.modeldir import MANIFEST, neural_id
from nbmf.models.config import ModelConfig

WEIGHTS = "weights.safetensors"
TOKENIZER = "tokenizer.json"
FORMAT = "nbmf-model/1"


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
                   data_hash: str, training: dict) -> Path:
    from safetensors.numpy import save_file

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
        "files": {name: sha256_file(out / name) for name in (WEIGHTS, TOKENIZER)},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def read_manifest(path) -> dict:
    """The manifest of an artifact directory, with every listed file's hash verified."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} is not a model artifact: it has no {MANIFEST}") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path / MANIFEST} is not valid JSON ({e}); "
                            "restore the artifact from its source") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: unsupported artifact format {manifest.get('format')!r} (expected {FORMAT})")
    files = manifest.get("files") or {}
    for name in (WEIGHTS, TOKENIZER):
        if name not in files:
            raise ArtifactError(f"{path / MANIFEST} lists no hash for {name}; the artifact is incomplete")
    for name, want in files.items():
        f = path / name
        if not f.is_file():
            raise ArtifactError(f"{path}: {name} is missing; restore the artifact from its source")
        got = sha256_file(f)
        if got != want:
            raise ArtifactError(f"{path}: {name} has {got[:19]}..., the manifest says {want[:19]}...: "
                                "the file was modified or corrupted; refusing to load it")
    return manifest


def manifest_id(manifest: dict) -> str:
    """A short identity of an artifact: sha256 of its canonical manifest."""
    return "sha256:" + hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(manifest: dict) -> bytes:
    """The model's identity (32 bytes): sha256 of what determines its behaviour, the artifact format, the
    architecture and the hashes of the weights and tokenizer, and nothing else (not the version name, not
    metrics: ``relabel`` keeps it). Format-v2 blobs bind their content checksum to it."""
    core = {k: manifest.get(k) for k in ("format", "architecture", "files")}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).digest()


def load_artifact(path):
    """(manifest, ModelConfig, IntModel, Tokenizer) of a verified artifact directory."""
    from safetensors.numpy import load_file

    from nbmf.runtime.intmodel import IntModel
    from nbmf.tokenizer import Tokenizer

    path = Path(path)
    manifest = read_manifest(path)
    try:
        cfg = ModelConfig(**manifest["architecture"])
        int_model = IntModel(cfg, load_file(str(path / WEIGHTS)))
        tokenizer = Tokenizer.load(path)
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path}: the artifact does not describe a loadable model ({e})") from None
    if tokenizer.vocab_size != cfg.vocab_size:
        raise ArtifactError(f"{path}: tokenizer has {tokenizer.vocab_size} ids, the model {cfg.vocab_size}")
    return manifest, cfg, int_model, tokenizer


def relabel(src, dest, version: str, metrics: dict | None = None) -> Path:
    """Copy a verified artifact under another encoder version name (registration picks the next free vN),
    with ``metrics`` (measured since the export, say) added to its manifest's.

    Only the manifest changes: the hashed files are copied byte for byte, so the model is the same one.
    """
    import shutil

    src, dest = Path(src), Path(dest)
    manifest = read_manifest(src)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in manifest["files"]:
        shutil.copy2(src / name, dest / name)
    manifest["version"], manifest["encoder_id"] = version, encoder_id_of(version)
    manifest["metrics"] = {**manifest.get("metrics", {}), **(metrics or {})}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    read_manifest(dest)
    return dest
