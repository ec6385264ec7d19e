"""Legacy stub blobs, built exactly as the old service built them (tests/conftest.py: build_legacy_blob)."""
from __future__ import annotations

import hashlib
import json
import zlib

import pytest

import nbmf
from nbmf.blob import Fidelity, Kind
from nbmf.errors import CorruptBlobError, FormatError, LegacySignatureError, OutputTooLargeError

FORMS = {
    "dict": lambda b: b,
    "json-text": json.dumps,
    "json-bytes": lambda b: json.dumps(b).encode(),
    "json-bytes-non-ascii": lambda b: json.dumps(b, ensure_ascii=False).encode(),
}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("length_field", ["length_bytes", "preview_length"])
def test_lossless_sample_records_decode_exactly(stub_registry, sample_payloads, make_legacy_blob, form, length_field):
    for payload in sample_payloads[:60]:
        res = stub_registry.decode_result(FORMS[form](make_legacy_blob(payload, "lossless", length_field)))
        assert res.payload == payload
        assert (res.legacy, res.version, res.truncated, res.fidelity) == (True, "legacy", False, Fidelity.LOSSLESS)
        assert res.kind == (Kind.TEXT if isinstance(payload, str) else Kind.JSON)


@pytest.mark.parametrize("payload", ["", "x", "😀 naïve\n", {"a": "\u00e9", "b": [1, 2.5, None, True]}, [], 0, None])
def test_lossless_edge_payloads(stub_registry, make_legacy_blob, payload):
    assert stub_registry.decode(make_legacy_blob(payload)) == payload


def test_every_sample_record_decodes_as_lossless_legacy(stub_registry, sample_payloads, make_legacy_blob):
    got = [r.payload for r in stub_registry.decode_many([make_legacy_blob(p) for p in sample_payloads])]
    assert got == sample_payloads


@pytest.mark.parametrize("length_field", ["preview_length", "length_bytes"])
def test_semantic_short_text_decodes_to_its_canonical_form(stub_registry, make_legacy_blob, length_field):
    res = stub_registry.decode_result(make_legacy_blob("  Book a\ttable \n for two  ", "semantic", length_field))
    assert res.payload == "Book a table for two"
    assert (res.truncated, res.fidelity, res.kind, res.legacy) == (False, Fidelity.SEMANTIC, Kind.TEXT, True)


def test_semantic_json_decodes_to_the_old_canonical_text(stub_registry, make_legacy_blob):
    obj = {"z": 1, "a": ["é", None]}
    res = stub_registry.decode_result(make_legacy_blob(obj, "semantic"))
    assert res.payload == json.dumps(obj, ensure_ascii=False, sort_keys=True) and not res.truncated


@pytest.mark.parametrize("n_chars, truncated", [(2047, False), (2048, False), (2049, True), (10000, True)])
@pytest.mark.parametrize("char", ["a", "é", "😀"])
def test_semantic_preview_is_cut_at_2048_characters(stub_registry, make_legacy_blob, n_chars, truncated, char):
    text = char * n_chars
    res = stub_registry.decode_result(make_legacy_blob("  " + text + " ", "semantic"))
    assert res.payload == text[:2048] and res.truncated is truncated


def test_semantic_truncated_sample_records(stub_registry, sample_payloads, make_legacy_blob):
    def canon(p):
        return " ".join(p.split()) if isinstance(p, str) else json.dumps(p, ensure_ascii=False, sort_keys=True)

    for p in sample_payloads[:120]:
        res = stub_registry.decode_result(make_legacy_blob(p, "semantic"))
        assert res.payload == canon(p)[:2048] and res.truncated is (len(canon(p)) > 2048)
    assert any(len(canon(p)) > 2048 for p in sample_payloads[:120]) and any(len(canon(p)) <= 2048 for p in sample_payloads[:120])


# -- tampering and damage ------------------------------------------------------------------------
def test_tampered_lossless_sig(stub_registry, make_legacy_blob):
    blob = make_legacy_blob({"role": "user", "content": "hi"})
    with pytest.raises(LegacySignatureError, match="signature"):
        stub_registry.decode({**blob, "sig": hashlib.sha256(b"other").hexdigest()})


def test_lossless_code_swapped_for_another_valid_payload(stub_registry, make_legacy_blob):
    blob, other = make_legacy_blob({"amount": 100}), make_legacy_blob({"amount": 900})
    with pytest.raises(LegacySignatureError):
        stub_registry.decode({**blob, "code": other["code"]})


def test_tampered_short_semantic_preview(stub_registry, make_legacy_blob):
    blob = make_legacy_blob("transfer 100 dollars", "semantic")
    with pytest.raises(LegacySignatureError):
        stub_registry.decode({**blob, "code": "transfer 900 dollars".encode().hex()})


def test_legacy_signature_error_is_a_corrupt_blob_error():
    assert issubclass(LegacySignatureError, CorruptBlobError)


@pytest.mark.parametrize("code", ["zz", "abc", 12, None, zlib.compress(b'"x"', 9).hex()[:-6],
                                  (zlib.compress(b'"x"', 9) + b"\x00").hex(), zlib.compress(b"\xff\xfe", 9).hex(),
                                  zlib.compress(b"{not json", 9).hex()])
def test_damaged_lossless_code_is_corrupt(stub_registry, make_legacy_blob, code):
    with pytest.raises(CorruptBlobError):
        stub_registry.decode({**make_legacy_blob("x"), "code": code})


def test_damaged_semantic_code_is_corrupt(stub_registry, make_legacy_blob):
    with pytest.raises(CorruptBlobError):
        stub_registry.decode({**make_legacy_blob("abc", "semantic"), "code": "ff"})


@pytest.mark.parametrize("blob", [
    {"meta": {}, "code": "00"}, {"code": "00", "sig": ""}, {"meta": [], "code": "00", "sig": ""},
    {"meta": {"fidelity": "lossy"}, "code": "00", "sig": ""}, "{not json", b'{"meta": ', b'{"a": 1}',
])
def test_malformed_legacy_structure_is_format_error(stub_registry, blob):
    with pytest.raises(FormatError):
        stub_registry.decode(blob)


@pytest.mark.parametrize("not_a_blob", [[1, 2], 42, None])
def test_non_blob_types_are_caller_misuse(stub_registry, not_a_blob):
    with pytest.raises(TypeError):
        stub_registry.decode(not_a_blob)


def test_legacy_max_output_size(stub_registry, make_legacy_blob):
    blob = make_legacy_blob("a" * 5000)  # raw is the JSON string: 5002 bytes
    with pytest.raises(OutputTooLargeError):
        stub_registry.decode(blob, max_output_size=5001)
    assert stub_registry.decode(blob, max_output_size=5002) == "a" * 5000
    with pytest.raises(OutputTooLargeError):
        stub_registry.decode(make_legacy_blob("b" * 3000, "semantic"), max_output_size=1000)


def test_legacy_inspect_describes_the_blob(stub_registry, make_legacy_blob):
    blob = make_legacy_blob({"a": 1})
    info = stub_registry.inspect(json.dumps(blob).encode())
    assert info["format"] == "legacy" and info["meta"] == blob["meta"] and info["sig"] == blob["sig"]
    assert info["code_bytes"] == len(bytes.fromhex(blob["code"]))


def test_module_level_api_reads_legacy(make_legacy_blob):
    assert nbmf.decode(make_legacy_blob(["a", {"b": None}])) == ["a", {"b": None}]
    assert nbmf.decode_result(json.dumps(make_legacy_blob("x y", "semantic"))).payload == "x y"


def test_legacy_dict_with_int_keys(stub_registry, make_legacy_blob):
    assert stub_registry.decode(make_legacy_blob({9: "a", 10: "b"})) == {"9": "a", "10": "b"}
