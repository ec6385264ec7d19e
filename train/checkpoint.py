"""Training checkpoints: a directory that describes itself, loaded without unpickling arbitrary objects.

    checkpoint.json      format, sha256 of every other file
    model.safetensors    float model state (parameters and QAT observers)
    optimizer.pt         AdamW state (tensors only: loaded with ``torch.load(weights_only=True)``)
    tokenizer.json       the run's BPE tokenizer (trained once by the driver)
    config.json          the full TrainJobConfig
    state.json           step, epoch, data position, schedule length, metric history
    artifact/            (final checkpoint only) the exported int8 codec artifact
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nbmf.artifact import sha256_file as _sha256  # one hashing routine for every manifest

FORMAT = "nbmf-train-checkpoint/1"
MANIFEST, MODEL, OPTIM, TOKENIZER, CONFIG, STATE = (
    "checkpoint.json", "model.safetensors", "optimizer.pt", "tokenizer.json", "config.json", "state.json")
ARTIFACT = "artifact"


class CheckpointError(RuntimeError):
    """A checkpoint directory is incomplete or was modified after it was written."""




@dataclass
class Loaded:
    model_state: dict
    optim_state: dict
    tokenizer_json: str
    config: dict
    state: dict


def save(directory, *, model, optimizer, tokenizer, config: dict, state: dict) -> Path:
    """Write a checkpoint of ``model`` (unwrapped, any device) into ``directory``."""
    import torch
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(d / MODEL))
    torch.save(optimizer.state_dict(), d / OPTIM)
    (d / TOKENIZER).write_text(tokenizer.to_json(), encoding="utf-8")
    (d / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    (d / STATE).write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    files = {name: _sha256(d / name) for name in (MODEL, OPTIM, TOKENIZER, CONFIG, STATE)}
    (d / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": files}, indent=2), encoding="utf-8")
    return d


def load(directory) -> Loaded:
    """Read a checkpoint after verifying every file's sha256."""
    import torch
    from safetensors.torch import load_file

    d = Path(directory)
    try:
        manifest = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{d} is not a training checkpoint ({e})") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{d}: unknown checkpoint format {manifest.get('format')!r}, expected {FORMAT}")
    for name, want in manifest.get("files", {}).items():
        if not (d / name).is_file() or _sha256(d / name) != want:
            raise CheckpointError(f"{d}: {name} is missing or differs from its recorded sha256")
    return Loaded(
        model_state=load_file(str(d / MODEL)),
        optim_state=torch.load(d / OPTIM, weights_only=True, map_location="cpu"),
        tokenizer_json=(d / TOKENIZER).read_text(encoding="utf-8"),
        config=json.loads((d / CONFIG).read_text(encoding="utf-8")),
        state=json.loads((d / STATE).read_text(encoding="utf-8")),
    )
