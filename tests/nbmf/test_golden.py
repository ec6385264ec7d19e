"""Golden blobs pin the layouts and the legacy format: what was written once must read the same forever.

tests/golden/v2/stub/*.nbmf were written by the stub in format v2 (what encode writes today: pinned byte for
byte); tests/golden/stub/*.nbmf by the stub in format v1 (read forever; re-encoding gives the same body in v2);
tests/golden/legacy/*.json were built exactly as the old stub service built its blobs. Each directory's
index.json holds every blob's input and expected payload. Regenerate only on purpose (a format change is a new
format version, not a regeneration; the v1 set is never regenerated):

    NBMF_REGENERATE=1 python -m pytest tests/nbmf/test_golden.py
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from helpers.format_doc import doc_block, dump_bytes
from helpers.golden import as_json, from_json, golden_case, read_index, write_index
from nbmf.blob import to_envelope, unpack
from nbmf.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
STUB_DIR = ROOT / "tests" / "golden" / "v2" / "stub"
V1_STUB_DIR = ROOT / "tests" / "golden" / "stub"
LEGACY_DIR = ROOT / "tests" / "golden" / "legacy"
REGENERATE = os.environ.get("NBMF_REGENERATE") == "1"

EXAMPLE_TEXT = "Remember: the user prefers metric units."

# name -> (payload, fidelity).
STUB_CASES = {
    "text": (EXAMPLE_TEXT, "lossless"),
    "json": ({"role": "user", "content": "héllo 😀"}, "lossless"),
    "bytes": (b"\x00\x01binary\xff", "lossless"),
    "semantic": ("  two   spaces  ", "semantic"),
    "empty": ("", "lossless"),
    "empty-bytes": (b"", "lossless"),
    "one-byte": (b"\x7b", "lossless"),
    "emoji": ("👩‍👩‍👧 café 😀", "lossless"),
    "lone-surrogates": ({"cut": "\ud83d", "low": "\udc00 tail"}, "lossless"),
    "semantic-json": ({"b": [1, 2.5, None], "a": {"y": True, "x": "e\u0301"}}, "semantic"),
    "semantic-nfc": ("Cafe\u0301\u00a0\tau lait\n", "semantic"),
    "semantic-bytes": (b"  kept  as is ", "semantic"),
    "two-byte-length": ("The quick brown fox jumps over the lazy dog. " * 4, "lossless"),
    "three-byte-length": ("0123456789abcdef" * 1100, "lossless"),
    "deep-json": (json.loads("[" * 64 + '{"k": "leaf"}' + "]" * 64), "lossless"),
}

# name -> (payload, fidelity, meta length field)
LEGACY_CASES = {
    "lossless-text": ("Book a table for two at 7pm.", "lossless", "length_bytes"),
    "lossless-json": ({"role": "user", "content": "héllo 😀", "n": [1, 2.5, None, True]}, "lossless", "length_bytes"),
    "lossless-preview-length": ({"z": "last", "a": "first"}, "lossless", "preview_length"),
    "semantic-text": ("  Book a\ttable \n for two  ", "semantic", "preview_length"),
    "semantic-json": ({"z": 1, "a": ["é", None]}, "semantic", "preview_length"),
    "semantic-length-bytes": ("short   text", "semantic", "length_bytes"),
    "semantic-truncated": ("word " * 600, "semantic", "preview_length"),
    "semantic-truncated-emoji": ("😀 " * 1500, "semantic", "preview_length"),
}


@pytest.fixture(scope="module")
def reg():
    return Registry(model_dir=None)


@pytest.fixture(scope="module")
def stub_index(reg):
    if REGENERATE:
        entries = []
        for name, (payload, fidelity) in STUB_CASES.items():
            blob = reg.encode(payload, fidelity=fidelity)
            (STUB_DIR / f"{name}.nbmf").write_bytes(blob)
            entries.append({"file": f"{name}.nbmf", "fidelity": fidelity, "input": as_json(payload),
                            "expected": as_json(reg.decode(blob)), "header": reg.inspect(blob).to_dict()})
        write_index(STUB_DIR, entries)
    return read_index(STUB_DIR)


@pytest.fixture(scope="module")
def legacy_index(make_legacy_blob):
    if REGENERATE:
        entries = []
        for name, (payload, fidelity, length_field) in LEGACY_CASES.items():
            blob = make_legacy_blob(payload, fidelity, length_field)
            (LEGACY_DIR / f"{name}.json").parent.mkdir(parents=True, exist_ok=True)
            (LEGACY_DIR / f"{name}.json").write_text(json.dumps(blob, ensure_ascii=False) + "\n", encoding="utf-8")
            if fidelity == "lossless":
                expected, truncated = payload, False
            else:
                canon = " ".join(payload.split()) if isinstance(payload, str) else json.dumps(
                    payload, ensure_ascii=False, sort_keys=True)
                expected, truncated = canon[:2048], len(canon) > 2048
            entries.append({"file": f"{name}.json", "fidelity": fidelity, "expected": as_json(expected),
                            "truncated": truncated})
        write_index(LEGACY_DIR, entries)
    return read_index(LEGACY_DIR)


def test_stub_index_matches_the_cases(stub_index):
    assert [e["file"] for e in stub_index] == [f"{n}.nbmf" for n in STUB_CASES], (
        "STUB_CASES changed without regenerating: NBMF_REGENERATE=1 python -m pytest tests/nbmf/test_golden.py")


@pytest.mark.parametrize("name", list(STUB_CASES))
def test_stub_golden_blob(reg, stub_index, name):
    entry, blob = golden_case(STUB_DIR, stub_index, name, STUB_CASES)
    payload, fidelity = STUB_CASES[name]
    res = reg.decode_result(blob)
    assert res.payload == from_json(entry["expected"])  # old blobs read the same
    assert reg.inspect(blob).to_dict() == entry["header"]  # and their headers say the same
    assert reg.encode(payload, fidelity=fidelity) == blob  # and the writer still writes these exact bytes


@pytest.mark.parametrize("name", list(STUB_CASES))
def test_v1_stub_golden_blob_reads_forever(reg, name):
    entry, blob = golden_case(V1_STUB_DIR, read_index(V1_STUB_DIR), name)
    payload, fidelity = STUB_CASES[name]
    assert reg.decode(blob) == from_json(entry["expected"]) and reg.inspect(blob).to_dict() == entry["header"]
    old, new = unpack(blob), unpack(reg.encode(payload, fidelity=fidelity))
    assert new[1] == old[1]  # v2 keeps the body: only the header's layout and checksum changed
    same = ("encoder_id", "fidelity", "kind", "original_length", "header_size")
    assert [getattr(new[0], f) for f in same] == [getattr(old[0], f) for f in same]


@pytest.mark.parametrize("name", list(LEGACY_CASES))
def test_legacy_golden_blob(reg, legacy_index, name):
    entry, data = golden_case(LEGACY_DIR, legacy_index, name, suffix=".json")
    res = reg.decode_result(data)
    assert res.payload == from_json(entry["expected"]) and res.truncated is entry["truncated"] and res.legacy
    assert reg.decode(json.loads(data)) == res.payload  # as a dict too


def test_legacy_index_matches_the_cases(legacy_index):
    assert [e["file"] for e in legacy_index] == [f"{n}.json" for n in LEGACY_CASES]


# -- docs/FORMAT.md's worked example is real output ----------------------------------------------
def test_format_doc_worked_example_is_the_golden_blob(reg):
    blob = (STUB_DIR / "text.nbmf").read_bytes()
    assert dump_bytes("worked-example-hex") == blob == reg.encode(EXAMPLE_TEXT)
    fields = doc_block("worked-example-fields")
    h = reg.inspect(blob)
    first_line_hex = [line.split()[0] for line in fields.splitlines() if line.strip()]
    assert first_line_hex[0] == f"{blob[0]:02x}" and first_line_hex[1] == f"{blob[1]:02x}"
    assert f"{h.crc32:#010x}" in fields and str(h.original_length) in fields


def test_format_doc_envelope_example_is_real(reg):
    blob = (STUB_DIR / "text.nbmf").read_bytes()
    env = json.loads(doc_block("worked-example-envelope"))
    assert env == to_envelope(blob) and base64.b64decode(env["body"]) == blob[reg.inspect(blob).header_size:]
