"""The released default model (models/, CURRENT): exact round trips on val records and pinned golden blobs.

Golden blobs under tests/golden/v2/released/ were written by the released model in format v2; every later
version of the code must decode them to the same payloads (and, with the same model, write the same bytes).
tests/golden/released/ holds the same model's format-v1 blobs: they read forever, and re-encoding their
payloads gives the same bodies. Regenerate only on purpose (never the v1 set):
NBMF_REGENERATE=1 pytest tests/nbmf/test_release.py
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import nbmf
from helpers.artifacts import sample_records
from nbmf.blob import Fidelity, unpack
from nbmf.payload import canonical, to_raw
from nbmf.registry import Registry, default_model_dir

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "v2" / "released"
V1_GOLDEN = ROOT / "tests" / "golden" / "released"
SAMPLE_VAL = ROOT / "data" / "sample" / "val.jsonl"
CORPUS_VAL = ROOT.parent / "shared" / "corpus" / "val.jsonl"

GOLDEN_EXTRA = [
    ("lossless", ""),
    ("lossless", "x"),
    ("lossless", "Grüße aus Köln 😀 — naïve café"),
    ("lossless", {"role": "user", "content": "lone \ud800 surrogate", "n": [1, 2.5, None, True]}),
    ("lossless", b"\x00\xff\xfe binary \x80"),
    ("semantic", "  Remember:\n\n the user   prefers  metric units.  "),
    ("semantic", {"b": 1, "a": {"z": [1, 2], "y": "é"}}),
]


@pytest.fixture(scope="module")
def registry():
    reg = Registry.default()
    if reg.current == "stub":
        pytest.fail(f"no released model: {default_model_dir()} must hold vN/ and CURRENT")
    return reg


def golden_cases():
    recs = sample_records(SAMPLE_VAL)
    by_type: dict[str, list] = {}
    for r in recs:
        by_type.setdefault(r["type"], []).append(r["data"])
    cases = [("lossless", d) for t in sorted(by_type) for d in by_type[t][:4]]
    return cases + GOLDEN_EXTRA


def _encode_case(payload):
    return {"bytes_hex": payload.hex()} if isinstance(payload, bytes) else {"value": payload}


def _decode_case(case):
    return bytes.fromhex(case["bytes_hex"]) if "bytes_hex" in case else case["value"]


def test_golden_blobs_decode_to_their_payloads(registry):
    index = GOLDEN / "index.json"
    if os.environ.get("NBMF_REGENERATE") == "1":
        GOLDEN.mkdir(parents=True, exist_ok=True)
        entries = []
        for i, (fidelity, payload) in enumerate(golden_cases()):
            blob = registry.encode(payload, fidelity=fidelity)
            (GOLDEN / f"{i:02d}.nbmf").write_bytes(blob)
            expected = registry.decode(blob)
            entries.append({"file": f"{i:02d}.nbmf", "fidelity": fidelity, "input": _encode_case(payload),
                            "expected": _encode_case(expected), "version": registry.inspect(blob).version})
        index.write_text(json.dumps(entries, indent=1, ensure_ascii=True) + "\n")
    entries = json.loads(index.read_text())
    assert len(entries) >= 15
    versions = set()
    for e in entries:
        blob = (GOLDEN / e["file"]).read_bytes()
        h = nbmf.inspect(blob)
        versions.add(h.version)
        assert registry.decode(blob) == _decode_case(e["expected"]), e["file"]
        # the same model writes the same bytes: the integer runtime is deterministic (the version that wrote the set,
        # which need not be the current one: v2 became current after this set was written)
        new = registry.encode(_decode_case(e["input"]), fidelity=e["fidelity"], version=e["version"])
        if new != blob:  # only where the zstd fallback (issue 14, after this set was written) is smaller now ...
            assert nbmf.inspect(new).fallback and len(new) < len(blob), e["file"]
            # ... and the codec that wrote the old blob still writes its very body
            assert _body_by(registry, h, _decode_case(e["input"])) == unpack(blob)[1], e["file"]
    assert versions - {"stub"}  # the golden set exercises the neural codec, not only the stub


def _body_by(registry, header, payload) -> bytes:
    """The body the codec named by ``header`` (the stub, or a version's neural coder) writes for ``payload``."""
    raw, kind = to_raw(payload, header.kind)
    if header.fidelity == Fidelity.SEMANTIC:
        raw = canonical(raw, kind)
    return registry.codec(header.encoder_id).encode_many([(raw, kind)], fidelity=int(header.fidelity))[0]


def test_v1_golden_blobs_read_forever_and_keep_their_bodies(registry):
    entries = json.loads((V1_GOLDEN / "index.json").read_text())
    assert len(entries) >= 15
    neural = 0
    for e in entries:
        blob = (V1_GOLDEN / e["file"]).read_bytes()
        assert nbmf.inspect(blob).format_version == 1
        assert registry.decode(blob) == _decode_case(e["expected"]), e["file"]
        # identical coded body, byte for byte, from the codec that wrote it (the registry may now keep a smaller
        # zstd-fallback body instead: test_golden_blobs_decode_to_their_payloads)
        assert _body_by(registry, nbmf.inspect(blob), _decode_case(e["input"])) == unpack(blob)[1], e["file"]
        neural += nbmf.inspect(blob).version != "stub"
    assert neural >= 10


def _val_payloads(path: Path, limit: int | None):
    return [r["data"] for r in sample_records(path, limit=limit)]


def test_released_model_round_trips_sample_val_records(registry):
    payloads = _val_payloads(SAMPLE_VAL, 40)
    blobs = registry.encode_many(payloads)
    assert [r.payload for r in registry.decode_many(blobs)] == payloads
    assert sum(nbmf.inspect(b).version == registry.current for b in blobs) >= 0.9 * len(blobs)


@pytest.mark.slow
def test_released_model_round_trips_every_val_record(registry):
    path = CORPUS_VAL if CORPUS_VAL.exists() else SAMPLE_VAL
    payloads = _val_payloads(path, None)
    for i in range(0, len(payloads), 64):
        chunk = payloads[i : i + 64]
        blobs = registry.encode_many(chunk)
        assert [r.payload for r in registry.decode_many(blobs)] == chunk
        sem = registry.encode_many(chunk, fidelity="semantic")
        from nbmf.payload import canonical, from_raw, to_raw

        want = [from_raw(canonical(*to_raw(p)), to_raw(p)[1]) for p in chunk]
        assert [r.payload for r in registry.decode_many(sem)] == want


@pytest.mark.slow
@pytest.mark.parametrize("enc,dec", [((1, 1), (7, 2)), ((32, 2), (1, 1))])
def test_every_val_record_decodes_in_another_process_batch_and_thread_count(registry, enc, dec):
    """Released model: encode batch 1 / 1 thread, decode batch 7 / 2 threads in another process, and vice versa."""
    from helpers.artifacts import cross_process

    path = CORPUS_VAL if CORPUS_VAL.exists() else SAMPLE_VAL
    artifact = registry.codec(registry.current).path
    bodies = cross_process(artifact, path, "encode", *enc)
    assert cross_process(artifact, path, "decode", *dec, stdin=bodies).startswith("ok ")
