"""Give an exported artifact that has none the classical fallback's zstd dictionary, trained on the model's own
training data (nbmf.dictionary's recipe); the command is recorded in the manifest's training commands.

    python -m train.dictionary models/v1 --train ../shared/corpus/train.jsonl

Run it once, when a version is released (models/v1 got its dictionary this way): a dictionary is never replaced,
and a version's fallback blobs decode only with its artifact's own file. New exports train theirs already.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nbmf.artifact import MANIFEST, attach_dictionary, read_manifest
from nbmf.dictionary import DICT_SAMPLES, DICT_SEED, DICT_SIZE, DictionarySpec, about, train_dictionary


def add_dictionary(artifact: Path, train: Path, spec: DictionarySpec = DictionarySpec(), command: str = "") -> dict:
    """Train the dictionary on ``train`` (a corpus JSONL file or a dataset directory) and attach it to
    ``artifact``; ``command`` is appended to the manifest's training commands. Returns the new manifest."""
    read_manifest(artifact)  # a broken artifact is refused before the training
    data, info = train_dictionary(train, spec)
    manifest = attach_dictionary(artifact, data, about(info))
    if command:
        manifest.setdefault("training", {}).setdefault("commands", []).append(command)
        (Path(artifact) / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return read_manifest(artifact)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.dictionary", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", type=Path, help="artifact directory (manifest.json, weights, tokenizer)")
    p.add_argument("--train", type=Path, required=True,
                   help="the model's training data: corpus JSONL file or collected dataset directory")
    p.add_argument("--size", type=int, default=DICT_SIZE, help=f"dictionary bytes (default {DICT_SIZE})")
    p.add_argument("--samples", type=int, default=DICT_SAMPLES, help=f"records drawn (default {DICT_SAMPLES})")
    p.add_argument("--seed", type=int, default=DICT_SEED, help=f"sampling seed (default {DICT_SEED})")
    a = p.parse_args(argv)
    command = " ".join(["python -m train.dictionary", *(sys.argv[1:] if argv is None else argv)])
    manifest = add_dictionary(a.artifact, a.train, DictionarySpec(a.size, a.samples, a.seed),
                              command + "  # the classical fallback's zstd dictionary")
    print(json.dumps(manifest["fallback"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
