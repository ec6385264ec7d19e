"""`nbmf bench`: every codec on the same records, measured the same way.

Rows: the anchors (legacy stub, zlib-9, zstd-19, zstd-19 + trained dictionary, brotli-11) and
every encoder version of the codec registry (stub, v1, ...). Each record is encoded and decoded
once per codec and fidelity, single thread, in this process. A version's row is what the registry
stores: per record the smallest verified body of its neural coder, its zstd fallback and the stub
(``written_by`` counts each; ``fallbacks`` the records its neural coder did not write).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from nbmf.bench import anchors
from nbmf.bench.metrics import Measurements, check_gates, summarize
from nbmf.blob import Fidelity, Kind
from nbmf.dictionary import DictionarySpec, train_dictionary
from nbmf.extras import require
from nbmf.record import Record, from_corpus

ANCHOR_NAMES = ("legacy", "zlib-9", "zstd-19", "zstd-19-dict", "brotli-11")
FIDELITIES = ("lossless", "semantic")
WRITTEN_BY = "written_by:"  # RegistryVersion.stats keys: blobs per codec that wrote the body ("v1", "v1:fallback")


@dataclass(frozen=True)
class BenchConfig:
    input: Path  # corpus JSONL or a collected dataset directory
    split: str = "val"  # the dataset split measured when `input` is a dataset
    train: Path | None = None  # dictionary training data; None: sibling train.jsonl / the dataset's train split
    limit: int | None = None  # first N records only
    fidelity: str = "lossless"  # lossless | semantic | both
    versions: tuple[str, ...] | None = None  # registry versions; None: all
    anchors: tuple[str, ...] | None = None  # anchor codecs; None: all
    dict_spec: DictionarySpec = field(default_factory=DictionarySpec)
    cache_dir: Path | None = None  # dictionary cache; None: $NBMF_CACHE_DIR or ~/.cache/nbmf
    pairs_codec: str | None = None  # codec whose pairs --pairs writes; None: the registry's current
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "input", Path(self.input))
        if self.fidelity not in ("lossless", "semantic", "both"):
            raise ValueError(f"fidelity must be lossless, semantic or both, got {self.fidelity!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be >= 1")
        if self.anchors is not None:
            unknown = sorted(set(self.anchors) - set(ANCHOR_NAMES))
            if unknown:
                raise ValueError(f"unknown anchor codec(s) {unknown}; choose from {', '.join(ANCHOR_NAMES)}")

    @property
    def fidelities(self) -> tuple[str, ...]:
        return FIDELITIES if self.fidelity == "both" else (self.fidelity,)


def load_records(cfg: BenchConfig) -> tuple[list[Record], int]:
    """(lossless records, bad line count) from a corpus JSONL file or a dataset directory."""
    path = cfg.input
    out: list[Record] = []
    bad = 0
    if path.is_dir():
        from nbmf.data.dataset import iter_records

        for rec in iter_records(path, cfg.split, include_semantic=False):
            out.append(rec)
            if cfg.limit is not None and len(out) >= cfg.limit:
                break
        return out, bad
    if not path.is_file():
        raise FileNotFoundError(f"bench input {path} does not exist (give a corpus .jsonl or a dataset directory)")
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(from_corpus(json.loads(line), origin=f"{path}:{lineno}"))
            except (UnicodeDecodeError, ValueError):  # not JSON (JSONDecodeError is a ValueError), not a record
                bad += 1
                continue
            if cfg.limit is not None and len(out) >= cfg.limit:
                break
    return out, bad


class RegistryVersion:
    """One encoder version of the codec registry, used through the public API."""

    fidelities = FIDELITIES
    extra_bytes = 0

    def __init__(self, registry, version: str):
        self.registry, self.name, self.stats = registry, version, Counter()

    def prepare(self, raw: bytes, kind: Kind):
        from nbmf.payload import from_raw

        return from_raw(raw, kind)

    def encode(self, payload, fidelity: str) -> bytes:
        blob = self.registry.encode(payload, fidelity=fidelity, version=self.name)
        from nbmf.blob import peek_header

        h = peek_header(blob)  # which codec wrote the body: the blob says so
        writer = "stub" if h.encoder_id == 0 else f"{h.version}:fallback" if h.fallback else h.version
        self.stats[f"{WRITTEN_BY}{writer}"] += 1
        if writer != self.name:
            self.stats["fallbacks"] += 1  # the version's own codec did not write it (its fallback or the stub did)
        return blob

    def decode(self, blob: bytes, fidelity: str):
        return self.registry.decode_result(blob)

    def output_bytes(self, res, kind: Kind) -> bytes:
        from nbmf.payload import canonical, to_raw

        if res.fidelity == Fidelity.SEMANTIC:
            return canonical(to_raw(res.payload, res.kind)[0], res.kind)
        return to_raw(res.payload, res.kind)[0]


def _expected_semantic(codec, raw: bytes, kind: Kind) -> bytes:
    if hasattr(codec, "expected_semantic"):
        return codec.expected_semantic(raw, kind)
    return anchors._canonical(raw, kind)


def _similarity(a: bytes, b: bytes) -> float:
    Levenshtein = require("rapidfuzz.distance").Levenshtein
    return float(Levenshtein.normalized_similarity(a.decode("utf-8", "surrogatepass"),
                                                   b.decode("utf-8", "surrogatepass")))


def _stats_snapshot(registry) -> dict:
    """registry.stats as a flat {name: count} dict, whatever container it is."""
    stats = getattr(registry, "stats", None)
    if stats is None:
        return {}
    if hasattr(stats, "as_dict"):
        stats = stats.as_dict()
    elif hasattr(stats, "__dataclass_fields__"):
        from dataclasses import asdict

        stats = asdict(stats)
    flat: dict[str, int] = {}

    def walk(prefix, obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(obj, (int, float)):
            flat[prefix] = obj

    walk("", dict(stats) if not isinstance(stats, dict) else stats)
    return flat


def build_codecs(cfg: BenchConfig, registry) -> tuple[list, dict | None]:
    """Anchor codecs then registry versions, and the dictionary info (None without zstd-dict)."""
    names = cfg.anchors if cfg.anchors is not None else ANCHOR_NAMES
    codecs, dict_info = [], None
    for name in ANCHOR_NAMES:
        if name not in names:
            continue
        if name == "legacy":
            codecs.append(anchors.LegacyStub(registry))
        elif name == "zlib-9":
            codecs.append(anchors.Zlib(9))
        elif name == "zstd-19":
            codecs.append(anchors.Zstd(19))
        elif name == "brotli-11":
            codecs.append(anchors.Brotli(11))
        elif name == "zstd-19-dict":
            train = cfg.train or default_train(cfg.input)
            data, dict_info = train_dictionary(train, cfg.dict_spec, cfg.cache_dir)
            codecs.append(anchors.Zstd(19, data))
    available = list(registry.versions())
    wanted = list(cfg.versions) if cfg.versions is not None else available
    unknown = [v for v in wanted if v not in available]
    if unknown:
        raise ValueError(f"unknown encoder version(s) {unknown}; this registry holds {', '.join(available)}")
    codecs += [RegistryVersion(registry, v) for v in wanted]
    return codecs, dict_info


def default_train(input_path: Path) -> Path:
    if input_path.is_dir():
        return input_path
    sibling = input_path.with_name("train.jsonl")
    if sibling.is_file() and sibling.resolve() != input_path.resolve():
        return sibling
    raise ValueError("no training data for the zstd dictionary: pass --train (a corpus train.jsonl or a "
                     "dataset directory), or leave zstd-19-dict out with --anchors")


def run_codec(codec, records: list[Record], fidelity: str, pairs: list | None, bar) -> dict:
    """Encode + decode every record once; return the codec's result row."""
    registry = getattr(codec, "registry", None)
    before = _stats_snapshot(registry) if registry is not None else {}
    if records:  # warm-up (lazy model loads, first-call imports) outside the timed loop
        r = records[0]
        try:
            codec.decode(codec.encode(codec.prepare(r.raw, r.kind), fidelity), fidelity)
        except Exception:
            pass  # the timed loop below records the failure
        codec.stats.clear()
    m = Measurements.empty()
    errors: Counter = Counter()  # per record type
    messages: list[str] = []
    hex_sizes: Counter = Counter()
    perf = time.perf_counter
    for r in records:
        item = codec.prepare(r.raw, r.kind)
        try:
            t0 = perf()
            stored = codec.encode(item, fidelity)
            t1 = perf()
            out = codec.decode(stored, fidelity)
            t2 = perf()
            got = codec.output_bytes(out, r.kind)
        except Exception as e:  # a codec failure is a measured outcome, not a crash of the bench
            errors[r.type] += 1
            if len(messages) < 10:
                messages.append(f"{r.id}: {type(e).__name__}: {e}"[:300])
            bar.update(1)
            continue
        expected = r.raw if fidelity == "lossless" else _expected_semantic(codec, r.raw, r.kind)
        sim = _similarity(r.raw, got) if fidelity == "semantic" else None
        m.add(len(r.raw), len(stored), r.type, got == expected, sim, t1 - t0, t2 - t1)
        if codec.name == "legacy" and fidelity == "lossless":
            hex_sizes[r.type] += anchors.legacy_code_hex_size(r.raw)
        if pairs is not None:
            pairs.append({
                "id": r.id, "type": r.type, "codec": codec.name, "fidelity": fidelity,
                "original": _payload_json(r.raw, r.kind), "compressed": stored,
                "reconstructed": _payload_json(got, r.kind, lossy=fidelity == "semantic"),
                "compression_ratio": len(r.raw) / len(stored) if stored else 0.0,
                "similarity_score": sim if sim is not None else (1.0 if got == expected else _similarity(r.raw, got)),
            })
        bar.update(1)
    types = sorted(set(m.types) | set(errors))
    by_type = {t: _with_errors(summarize(m.select(t)), errors[t]) for t in types}
    everything = _with_errors(summarize(m), sum(errors.values()))
    if hex_sizes:
        for t in by_type:
            by_type[t]["ratio_code_hex_only"] = by_type[t]["raw_bytes"] / hex_sizes[t]
        everything["ratio_code_hex_only"] = everything["raw_bytes"] / sum(hex_sizes.values())
    after = _stats_snapshot(registry) if registry is not None else {}
    return {
        "codec": codec.name,
        "family": "nbmf" if isinstance(codec, RegistryVersion) else "anchor",
        "fidelity": fidelity,
        "extra_bytes": codec.extra_bytes,
        "fallbacks": int(codec.stats.get("fallbacks", 0)),
        "written_by": {k.removeprefix(WRITTEN_BY): n for k, n in sorted(codec.stats.items())
                       if k.startswith(WRITTEN_BY)},
        "registry_stats": {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)},
        "errors": dict(errors),
        "error_messages": messages,
        "by_type": by_type,
        "all": everything,
        "gates": check_gates(everything, fidelity),
        "_points": list(zip(m.raw_bytes, m.stored_bytes)),
    }


def _with_errors(summary: dict, errors: int) -> dict:
    """Failed records count against exact match (a record that did not come back is not exact)."""
    summary["errors"] = errors
    if errors:
        n = summary.get("n", 0)
        summary["exact_rate"] = (summary.get("exact_rate", 0.0) * n) / (n + errors)
    return summary


def _payload_json(raw: bytes, kind: Kind, lossy: bool = False):
    """A pair's original/reconstructed as JSON-able payload (objects stay objects)."""
    text = raw.decode("utf-8", "surrogatepass")
    if kind == Kind.JSON:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text  # a truncated semantic preview is text
    if kind == Kind.BYTES:
        import base64

        return base64.b64encode(raw).decode()
    return text


def run(cfg: BenchConfig, registry=None) -> dict:
    """Run the bench; return the result dict (see report.write_json for the file layout)."""
    from nbmf.registry import Registry

    tqdm = require("tqdm").tqdm
    t_start = time.perf_counter()
    registry = registry if registry is not None else Registry.default()
    records, bad = load_records(cfg)
    if not records:
        raise ValueError(f"no records to bench in {cfg.input}")
    codecs, dict_info = build_codecs(cfg, registry)
    pairs_codec = cfg.pairs_codec or getattr(registry, "current", None)
    rows, pairs = [], []
    total = sum(len(records) for c in codecs for f in cfg.fidelities if f in c.fidelities)
    with tqdm(total=total, desc="bench", unit="rec", file=sys.stderr, disable=not cfg.progress, leave=False) as bar:
        for fidelity in cfg.fidelities:
            for codec in codecs:
                if fidelity not in codec.fidelities:
                    continue
                bar.set_postfix_str(f"{codec.name} {fidelity}")
                rows.append(run_codec(codec, records, fidelity, pairs if codec.name == pairs_codec else None, bar))
    return {
        "input": str(cfg.input),
        "split": cfg.split if cfg.input.is_dir() else None,
        "records": len(records),
        "bad_lines": bad,
        "types": dict(Counter(r.type for r in records)),
        "raw_bytes": sum(len(r.raw) for r in records),
        "fidelities": list(cfg.fidelities),
        "dictionary": dict_info,
        "registry": {"versions": list(registry.versions()), "current": getattr(registry, "current", None)},
        "rows": rows,
        "pairs": pairs,
        "pairs_codec": pairs_codec,
        "elapsed_s": time.perf_counter() - t_start,
    }
