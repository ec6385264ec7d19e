"""Export a standalone training run's checkpoint as a codec artifact (the released default model).

    python -m train.standalone --out runs/release --export models/v1 --version v1
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from nbmf.export import export_artifact
from nbmf.models import ModelConfig, build_model
from nbmf.tokenizer import Tokenizer


def export_run(run_dir: Path, out_dir: Path, version: str, tcfg, window: int = 0) -> Path:
    """``window`` > 0 narrows the attention window at decode (ALiBi: any window works; fewer keys, faster)."""
    from train.standalone import file_sha256

    state = torch.load(Path(run_dir) / "checkpoint.pt", weights_only=True)
    cfg = ModelConfig(**state["model_config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    model.set_qat(True).eval()
    if window:
        cfg = dataclasses.replace(cfg, context=window)  # the manifest's context is the decode window
    vals = [h for h in state["history"] if h.get("kind") == "val"]
    train_cfg = state["train_config"]
    metrics = {"val_bits_per_byte_float_qat": vals[-1]["bits_per_byte"] if vals else None,
               "steps": state["step"], "params": model.num_params()}
    commands = Path(run_dir) / "COMMANDS"  # the exact commands of a run resumed across sessions, if kept
    training = {"commands": commands.read_text().splitlines() if commands.exists()
                else [" ".join(["python -m train.standalone"] + sys.argv[1:])],
                "train_config": train_cfg, "history": vals}
    from nbmf.dictionary import about, train_dictionary

    dictionary, info = train_dictionary(train_cfg["train_file"])  # the fallback's, from the same training data
    return export_artifact(model, cfg, Tokenizer.load(run_dir), out_dir, version=version, metrics=metrics,
                           data_hash=file_sha256(train_cfg["train_file"]), training=training,
                           dictionary=dictionary, dictionary_info=about(info))
