"""What a user would pick instead of NBMF: the codecs every bench row is compared against.

Each bench codec turns a record's raw bytes into the bytes that would be stored and back (``kind``
is the record's ``nbmf.blob.Kind``):
  prepare(raw, kind) -> input   (untimed: what the caller already holds)
  encode(input, fidelity) -> stored bytes   (timed)
  decode(stored, fidelity) -> output        (timed)
  output_bytes(output, kind) -> bytes       (untimed: for the exact-match check)
Classical codecs compress bytes; in semantic mode they compress the canonical form (a fair
lossy baseline). The legacy stub writes the old service's dict blob and reads it back through
nbmf's own legacy decoder.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nbmf.extras import require

DICT_SIZE = 112_640  # bytes; the zstd CLI's default dictionary size, as in ../shared/ANCHORS.md
DICT_SAMPLES = 30_000  # training records drawn from the train split
DICT_SEED = 0


def _canonical(raw: bytes, kind) -> bytes:
    from nbmf.payload import canonical

    return canonical(raw, kind)


class ClassicalCodec:
    """Base for byte codecs: no header, the stored size is the compressed frame alone."""

    name = "?"
    fidelities = ("lossless", "semantic")
    extra_bytes = 0  # shared state a decoder must hold (dictionary), reported separately

    def __init__(self):
        self.stats = Counter()

    def prepare(self, raw: bytes, kind):
        return raw, kind

    def encode(self, item, fidelity: str) -> bytes:
        raw, kind = item
        return self.compress(_canonical(raw, kind) if fidelity == "semantic" else raw)

    def decode(self, stored: bytes, fidelity: str) -> bytes:
        return self.decompress(stored)

    def output_bytes(self, out: bytes, kind) -> bytes:
        return out

    def compress(self, data: bytes) -> bytes:
        raise NotImplementedError

    def decompress(self, data: bytes) -> bytes:
        raise NotImplementedError


class Zlib(ClassicalCodec):
    def __init__(self, level: int = 9):
        super().__init__()
        self.level, self.name = level, f"zlib-{level}"

    def compress(self, data):
        return zlib.compress(data, self.level)

    def decompress(self, data):
        return zlib.decompress(data)


class Brotli(ClassicalCodec):
    def __init__(self, quality: int = 11):
        super().__init__()
        self.quality, self.name = quality, f"brotli-{quality}"

    def compress(self, data):
        return require("brotli").compress(data, quality=self.quality)

    def decompress(self, data):
        return require("brotli").decompress(data)


class Zstd(ClassicalCodec):
    """zstd frames without checksum, content size or dictionary id (the smallest honest frame)."""

    def __init__(self, level: int = 19, dictionary: bytes | None = None):
        zstd = require("zstandard")
        super().__init__()
        self.level = level
        self.name = f"zstd-{level}" + ("-dict" if dictionary else "")
        d = zstd.ZstdCompressionDict(dictionary) if dictionary else None
        self.extra_bytes = len(dictionary) if dictionary else 0
        self._c = zstd.ZstdCompressor(level=level, dict_data=d, write_checksum=False,
                                      write_content_size=False, write_dict_id=False)
        self._d = zstd.ZstdDecompressor(dict_data=d)

    def compress(self, data):
        return self._c.compress(data)

    def decompress(self, data):
        # No content size in the frame: a streaming decompressor sizes the output itself.
        return self._d.decompressobj().decompress(data)


# -- legacy stub -------------------------------------------------------------------------------

LEGACY_PREVIEW_CHARS = 2048


def legacy_canonical(payload) -> str:
    """The OLD stub's canonical form (not nbmf.payload.canonical: no NFC, default separators)."""
    if isinstance(payload, str):
        return " ".join(payload.split())
    return json.dumps(payload, ensure_ascii=False, sort_keys=True)


def legacy_blob(payload, fidelity: str = "lossless") -> dict:
    """The dict the old stub encoder wrote (issue 2, item 3), field for field."""
    sig = hashlib.sha256(
        json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
        if fidelity == "lossless" else legacy_canonical(payload).encode("utf-8", "surrogatepass")
    ).hexdigest()
    ptype = "text" if isinstance(payload, str) else "json"
    if fidelity == "lossless":
        js = json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")
        meta = {"fidelity": "lossless", "type": ptype, "length_bytes": len(js)}
        return {"meta": meta, "code": zlib.compress(js, 9).hex(), "sig": sig}
    canon = legacy_canonical(payload)
    preview = canon[:LEGACY_PREVIEW_CHARS]
    meta = {"fidelity": "semantic", "type": ptype, "preview_length": len(preview),
            "length_bytes": len(canon.encode("utf-8", "surrogatepass"))}
    return {"meta": meta, "code": preview.encode("utf-8", "surrogatepass").hex(), "sig": sig}


class LegacyStub:
    """The old stub as it stored blobs: its dict serialized with json.dumps (stored size = that
    JSON text's length), read back through `Registry.decode_result` (nbmf's legacy path)."""

    name = "legacy"
    fidelities = ("lossless", "semantic")
    extra_bytes = 0

    def __init__(self, registry):
        self.registry = registry
        self.stats = Counter()

    def prepare(self, raw: bytes, kind):
        from nbmf.payload import from_raw

        return from_raw(raw, kind)

    def encode(self, payload, fidelity: str) -> bytes:
        return json.dumps(legacy_blob(payload, fidelity)).encode()

    def decode(self, stored: bytes, fidelity: str):
        return self.registry.decode_result(stored)

    def output_bytes(self, res, kind) -> bytes:
        from nbmf.blob import Fidelity

        if res.fidelity == Fidelity.SEMANTIC:
            p = res.payload
            return (p if isinstance(p, str) else legacy_canonical(p)).encode("utf-8", "surrogatepass")
        from nbmf.payload import to_raw

        return to_raw(res.payload, res.kind)[0]

    def expected_semantic(self, raw: bytes, kind) -> bytes:
        """What an exact semantic decode would return: the old canonical form, untruncated."""
        return legacy_canonical(self.prepare(raw, kind)).encode("utf-8", "surrogatepass")


def legacy_code_hex_size(raw: bytes) -> int:
    """ANCHORS.md's legacy row ("zlib-9 stored as hex"): 2 x zlib-9 of the raw bytes, without
    the dict, meta and sig the old service also stored."""
    return 2 * len(zlib.compress(raw, 9))


# -- zstd dictionary ---------------------------------------------------------------------------

def _corpus_raws(path: Path) -> Iterator[bytes]:
    """Raw bytes of every readable corpus record (others are skipped: the bench counts them)."""
    from nbmf.record import from_corpus

    with open(path, "rb") as f:
        for line in f:
            try:
                yield from_corpus(json.loads(line)).raw
            except (UnicodeDecodeError, ValueError):
                continue


@dataclass(frozen=True)
class DictionarySpec:
    size: int = DICT_SIZE
    samples: int = DICT_SAMPLES
    seed: int = DICT_SEED


def _train_source(train: Path):
    """A re-iterable raw-bytes source and a content key for the cache."""
    train = Path(train)
    if train.is_dir():
        from nbmf.data.dataset import load_manifest, read_records

        key = load_manifest(train)["content_hash"]
        return (lambda: (r["raw"] for r in read_records(train, "train", columns=["raw"],
                                                          include_semantic=False))), key
    h = hashlib.sha256()
    with open(train, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return (lambda: _corpus_raws(train)), f"sha256:{h.hexdigest()}"


def default_cache_dir() -> Path:
    env = os.environ.get("NBMF_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nbmf"


def train_dictionary(train: str | Path, spec: DictionarySpec = DictionarySpec(),
                     cache_dir: str | Path | None = None) -> tuple[bytes, dict]:
    """zstd dictionary from `spec.samples` records drawn (random.Random(seed).sample) from the
    training split; cached on disk by (train content hash, spec). Returns (dict bytes, info)."""
    zstd = require("zstandard")
    factory, key = _train_source(Path(train))
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tag = hashlib.sha256(f"{key}|{spec.size}|{spec.samples}|{spec.seed}".encode()).hexdigest()[:24]
    path = cache / f"zstd-dict-{tag}.bin"
    info = {"bytes": None, "train": str(train), "train_hash": key, "samples": spec.samples,
            "seed": spec.seed, "target_size": spec.size, "cache": str(path), "cached": path.is_file()}
    if path.is_file():
        data = path.read_bytes()
        info["bytes"] = len(data)
        return data, info
    # Two passes keep memory at the sample, not the split: random.sample's picks depend only on
    # the population size, so sampling indices equals sampling the records themselves.
    n = sum(1 for _ in factory())
    if n == 0:
        raise ValueError(f"no training records in {train} to train a zstd dictionary on")
    order = random.Random(spec.seed).sample(range(n), min(spec.samples, n))
    wanted = set(order)
    by_index = {i: raw for i, raw in enumerate(factory()) if i in wanted}
    picked = [by_index.pop(i) for i in order]  # in draw order, as random.sample(records, k) returns
    try:
        d = zstd.train_dictionary(spec.size, picked)
    except zstd.ZstdError as e:
        raise ValueError(f"zstd could not train a {spec.size}-byte dictionary from {len(picked)} records "
                         f"of {train} ({e}); use more training records or a smaller dictionary") from e
    data = d.as_bytes()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)
    info["bytes"] = len(data)
    return data, info
