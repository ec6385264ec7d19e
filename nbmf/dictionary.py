"""The zstd dictionary of a neural version's classical fallback (nbmf.codecs.fallback), and how it is trained.

One recipe, used by the export path (the dictionary ships in the model artifact) and by ``nbmf bench``'s
zstd-19-dict anchor, so the two are the same bytes for the same training data: ``spec.samples`` records
drawn with ``random.Random(spec.seed).sample`` from the training split, ``zstandard.train_dictionary`` of
``spec.size`` bytes. zstd's trainer is not promised to give the same bytes in every zstandard version: the
artifact's file (hash-verified) is what decodes its blobs, never a retrained one.

>>> len(train([b'{"role": "user", "content": "hello %d"}' % i for i in range(400)], size=1024))
1024
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import zstandard

DICT_SIZE = 112_640  # bytes; the zstd CLI's default dictionary size, as in ../shared/ANCHORS.md
DICT_SAMPLES = 30_000  # training records drawn from the train split
DICT_SEED = 0


@dataclass(frozen=True)
class DictionarySpec:
    size: int = DICT_SIZE
    samples: int = DICT_SAMPLES
    seed: int = DICT_SEED


def train(samples: Sequence[bytes], size: int = DICT_SIZE) -> bytes:
    """A ``size``-byte zstd dictionary of ``samples`` (raw record bytes); ValueError when zstd cannot train one."""
    try:
        return zstandard.train_dictionary(size, list(samples)).as_bytes()
    except zstandard.ZstdError as e:
        raise ValueError(f"zstd could not train a {size}-byte dictionary from {len(samples)} records ({e}); "
                         "use more training records or a smaller dictionary") from e


def about(info: dict) -> dict:
    """What a manifest records of a dictionary ``train_dictionary`` trained (its "fallback" entry, with the file's
    size): the recipe and data, and the zstandard that trained it (another one may train other bytes)."""
    return {"training_data": info["train_hash"], "samples": info["samples"], "seed": info["seed"],
            "target_size": info["target_size"], "zstandard": zstandard.__version__}


def _corpus_raws(path: Path) -> Iterator[bytes]:
    """Raw bytes of every readable corpus record (others are skipped: the bench counts them)."""
    from nbmf.record import from_corpus

    with open(path, "rb") as f:
        for line in f:
            try:
                yield from_corpus(json.loads(line)).raw
            except (UnicodeDecodeError, ValueError):
                continue


def _train_source(source: Path):
    """A re-iterable raw-bytes source (a corpus JSONL file, or a dataset directory's train split) and a content
    key for the cache."""
    if source.is_dir():
        from nbmf.data.dataset import load_manifest, read_records

        key = load_manifest(source)["content_hash"]
        return (lambda: (r["raw"] for r in read_records(source, "train", columns=["raw"],
                                                           include_semantic=False))), key
    h = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return (lambda: _corpus_raws(source)), f"sha256:{h.hexdigest()}"


def default_cache_dir() -> Path:
    env = os.environ.get("NBMF_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nbmf"


def train_dictionary(source: str | Path, spec: DictionarySpec = DictionarySpec(),
                     cache_dir: str | Path | None = None) -> tuple[bytes, dict]:
    """zstd dictionary from ``spec.samples`` records drawn (random.Random(seed).sample) from ``source``'s training
    records (a corpus JSONL file or a collected dataset directory); cached on disk by (content hash, spec).
    Returns (dictionary bytes, info)."""
    factory, key = _train_source(Path(source))
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tag = hashlib.sha256(f"{key}|{spec.size}|{spec.samples}|{spec.seed}".encode()).hexdigest()[:24]
    path = cache / f"zstd-dict-{tag}.bin"
    info = {"bytes": None, "train": str(source), "train_hash": key, "samples": spec.samples,
            "seed": spec.seed, "target_size": spec.size, "cache": str(path), "cached": path.is_file()}
    if path.is_file():
        data = path.read_bytes()
        info["bytes"] = len(data)
        return data, info
    # Two passes keep memory at the sample, not the split: random.sample's picks depend only on
    # the population size, so sampling indices equals sampling the records themselves.
    n = sum(1 for _ in factory())
    if n == 0:
        raise ValueError(f"no training records in {source} to train a zstd dictionary on")
    order = random.Random(spec.seed).sample(range(n), min(spec.samples, n))
    wanted = set(order)
    by_index = {i: raw for i, raw in enumerate(factory()) if i in wanted}
    picked = [by_index.pop(i) for i in order]  # in draw order, as random.sample(records, k) returns
    try:
        data = train(picked, spec.size)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)
    info["bytes"] = len(data)
    return data, info
