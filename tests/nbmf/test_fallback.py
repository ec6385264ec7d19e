"""The classical fallback (issue 14): zstd with the dictionary a version's artifact ships, kept per record whenever
its body is the smallest, in a format-v2 blob with descriptor bit 3 set.

tests/golden/v2/fallback/*.nbmf were written by the released model's fallback (records the model codes badly);
every later version of the code must decode them to the same payloads and, with the same dictionary, write the same
bytes. Regenerate only on purpose: NBMF_REGENERATE=1 python -m pytest tests/nbmf/test_fallback.py
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import zstandard

from helpers.artifacts import sample_records, tiny_artifact
from helpers.format_doc import doc_block, dump_bytes
from helpers.golden import as_json, from_json, golden_case, read_index, write_index
from nbmf import artifact, modeldir
from nbmf import blob as blobfmt
from nbmf.bench.anchors import Zstd
from nbmf.codecs import fallback
from nbmf.codecs.fallback import MAX_EXPANSION, MAX_WINDOW, FallbackCodec
from nbmf.dictionary import train
from nbmf.errors import ArtifactError, CorruptBlobError, NBMFError, UnknownVersionError
from nbmf.payload import canonical, to_raw
from nbmf.registry import NEURAL_MAX_BYTES, Registry, default_model_dir

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "v2" / "fallback"
REGENERATE = os.environ.get("NBMF_REGENERATE") == "1"
V1_FINGERPRINT = "52d221d495d7006cbeaa6e96bd56a30b83e2b09a987962f4bd3348ac18280cbe"  # before v1 had a dictionary
V1_DICTIONARY = "sha256:45ce47b8cff7cb08cd13522ac459ae8df9f1376a684010ecaa177041edccd498"

EXAMPLE = "Remember: the user prefers metric units. " * 8  # docs/FORMAT.md's fallback example
# name -> (payload, fidelity): records the released model codes worse than zstd with its dictionary (long-range
# repeats beyond its 128-token context, binary, base64)
CASES = {
    "text": (EXAMPLE, "lossless"),
    "semantic": ("  The same   sentence,\n over and over.  " * 40, "semantic"),
    "bytes": (bytes(range(256)) * 3, "lossless"),
    "json": ({"messages": [{"role": "user", "content": "please remind me at 9am"}] * 30}, "lossless"),
    "base64-twice": (" ".join([base64.b64encode(random.Random(0).randbytes(120)).decode()] * 2), "lossless"),
}


@pytest.fixture(scope="module")
def reg():
    r = Registry(default_model_dir(), current="v1")  # v1's fallback set (v2, current since, ships the same dictionary)
    assert r.fallback("v1") is not None, "the released model ships a dictionary"
    return r


@pytest.fixture(scope="module")
def index(reg):
    if REGENERATE:
        entries = []
        for name, (payload, fidelity) in CASES.items():
            blob = reg.encode(payload, fidelity=fidelity)
            assert blobfmt.peek_header(blob).fallback, f"{name}: the model now wins; pick another record"
            (GOLDEN / f"{name}.nbmf").write_bytes(blob)
            entries.append({"file": f"{name}.nbmf", "fidelity": fidelity, "input": as_json(payload),
                            "expected": as_json(reg.decode(blob)), "header": reg.inspect(blob).to_dict()})
        write_index(GOLDEN, entries)
    return read_index(GOLDEN)


def _never_wrong(reg, bad: bytes, payload) -> None:
    """Damage raises a typed error or, where the codec ignores it, gives back exactly the payload."""
    try:
        got = reg.decode(bad)
    except NBMFError:
        return
    assert got == payload and type(got) is type(payload), bad.hex()


# -- identity: the dictionary is not part of the model ---------------------------------------------------
def test_the_neural_fingerprint_of_v1_is_what_it_was_before_the_dictionary():
    """Every v2 blob models/v1 wrote binds its checksum to this value: adding zstd.dict must not move it."""
    manifest = artifact.read_manifest(modeldir.PACKAGED / "v1")
    assert manifest["files"][artifact.DICTIONARY] == V1_DICTIONARY
    assert artifact.fingerprint(manifest).hex() == V1_FINGERPRINT
    without = dict(manifest, files={k: v for k, v in manifest["files"].items() if k != artifact.DICTIONARY})
    assert artifact.fingerprint(without).hex() == V1_FINGERPRINT


def test_the_fallback_fingerprint_names_the_dictionary(reg):
    fb = reg.fallback("v1")
    assert fb.dictionary_sha256 == V1_DICTIONARY and fb.encoder_id == 1 and fb.name == "v1:fallback"
    assert fb.fingerprint == hashlib.sha256(b"nbmf fallback: zstd dictionary " + V1_DICTIONARY.encode()).digest()
    assert fb.fingerprint != reg.codec("v1").fingerprint


# -- golden blobs and the worked example -------------------------------------------------------------------
def test_index_matches_the_cases(index):
    assert [e["file"] for e in index] == [f"{n}.nbmf" for n in CASES], (
        "CASES changed without regenerating: NBMF_REGENERATE=1 python -m pytest tests/nbmf/test_fallback.py")


@pytest.mark.parametrize("name", list(CASES))
def test_golden_fallback_blob(reg, index, name):
    entry, blob = golden_case(GOLDEN, index, name, CASES)
    payload, fidelity = CASES[name]
    h = reg.inspect(blob)
    assert h.fallback and h.version == "v1" and h.to_dict() == entry["header"]
    assert reg.decode(blob) == from_json(entry["expected"])  # fallback blobs read the same forever
    assert reg.encode(payload, fidelity=fidelity) == blob  # and the writer keeps writing them, byte for byte


def test_format_doc_fallback_example_is_the_golden_blob(reg):
    blob = (GOLDEN / "text.nbmf").read_bytes()
    assert dump_bytes("fallback-example-hex") == blob == reg.encode(EXAMPLE)
    fields = doc_block("fallback-example-fields")
    h = reg.inspect(blob)
    rows = [line.split() for line in fields.splitlines() if line.strip()]
    assert rows[0][0] == f"{blob[0]:02x}" and rows[1][:2] == [f"{blob[1]:02x}", f"{blob[2]:02x}"]
    assert rows[2][:4] == [f"{x:02x}" for x in blob[3:7]] and rows[3][:2] == [f"{x:02x}" for x in blob[7:9]]
    assert rows[4][:3] == [f"{x:02x}" for x in blob[9:12]]  # the body starts with the frame header: no magic number
    assert f"{h.crc32:#010x}" in fields and f"{h.original_length}" in fields
    assert f"{len(blob)} bytes" in fields and f"{len(blob) - h.header_size} bytes" in fields
    sizes = {"neural": len(reg.codec("v1").encode_raw(EXAMPLE.encode(), blobfmt.Kind.TEXT)),
             "stub": len(reg.stub.encode_raw(EXAMPLE.encode()))}
    assert all(f"{k} {v}" in fields for k, v in sizes.items()), sizes


# -- the choice: never larger than zstd with the dictionary, plus the header ---------------------------------
@pytest.mark.parametrize("fidelity", ["lossless", "semantic"])
def test_no_sample_record_is_stored_larger_than_zstd_dict_plus_its_header(reg, fidelity):
    payloads = [r["data"] for r in sample_records(ROOT / "data" / "sample" / "val.jsonl")]
    if fidelity == "semantic":
        payloads = payloads[:120]
    anchor = Zstd(dictionary=reg.fallback("v1").dictionary)  # nbmf bench's zstd-19-dict row, frame for frame
    blobs = reg.encode_many(payloads, fidelity=fidelity)
    kept = {"neural": 0, "fallback": 0, "stub": 0}
    for p, blob in zip(payloads, blobs):
        raw, kind = to_raw(p)
        raw = canonical(raw, kind) if fidelity == "semantic" else raw
        h, body = blobfmt.unpack(blob)
        frame = anchor.compress(raw)
        assert len(blob) <= len(frame) + h.header_size
        assert len(body) <= len(reg.stub.encode_raw(raw))
        kept["stub" if h.encoder_id == 0 else "fallback" if h.fallback else "neural"] += 1
        if h.fallback:
            assert fallback.MAGIC + body == frame  # the fallback writes the anchor's very frame, less its magic
    assert [r.payload for r in reg.decode_many(blobs)] == (
        payloads if fidelity == "lossless" else [reg.decode(b) for b in blobs])
    assert kept["neural"] > 0.9 * len(payloads), kept  # the model still writes nearly everything


def test_records_the_model_codes_badly_go_to_the_fallback(reg):
    large = {"log": [f"event {i}: user {i % 7} did {('read', 'write', 'delete')[i % 3]}" for i in range(3000)]}
    assert len(to_raw(large)[0]) > NEURAL_MAX_BYTES
    payloads = [CASES["text"][0], CASES["base64-twice"][0], large]
    r = Registry(default_model_dir(), current="v1")  # v2's match model codes the repeated base64 itself
    blobs = r.encode_many(payloads)
    assert all(blobfmt.peek_header(b).fallback for b in blobs)
    assert [r.decode(b) for b in blobs] == payloads
    assert r.stats.encodes == {"v1:fallback": 3}
    assert r.stats.fallbacks == {"v1:larger": 2, "v1:large": 1}  # why the neural coder did not write them
    assert r.stats.decodes == {"v1:fallback": 3}
    stub = len(r.encode(large, version="stub"))
    assert len(blobs[2]) < 0.6 * stub  # the large record went to the stub before: 4,342 bytes now, 9,286 then


def test_ties_keep_the_cheaper_decode():
    """Equal sizes: the stub (no artifact needed) before the fallback before the neural coder."""
    from nbmf.registry import _RANK

    assert _RANK["stub"] < _RANK["fallback"] < _RANK["neural"]


# -- decoding a fallback blob ------------------------------------------------------------------------------
def test_a_fallback_blob_decodes_without_loading_the_model(index):
    blobs = [(GOLDEN / e["file"]).read_bytes().hex() for e in index]
    code = f"""
import sys
from nbmf.registry import Registry, default_model_dir
reg = Registry(default_model_dir())
out = [r.payload for r in reg.decode_many([bytes.fromhex(h) for h in {blobs!r}])]
assert "nbmf.codecs.neural" not in sys.modules and "numba" not in sys.modules, "the model was loaded"
print(len(out))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if k != "NBMF_MODEL_DIR"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(len(blobs))


def test_fallback_codec_threads_do_not_share_zstd_contexts(reg):
    fb = reg.fallback("v1")
    raws = [(f"record {i} ".encode() * (i % 50 + 1), 0) for i in range(400)]

    def round_trip(part):
        bodies = fb.encode_many(part, verify=True)
        return fb.decode_many([(b, 0, len(r)) for b, (r, _) in zip(bodies, part)]) == [r for r, _ in part]

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(round_trip, [raws[i::4] for i in range(4)]))


# -- hostile blobs -------------------------------------------------------------------------------------------
def _no_dictionary_copy(tmp_path) -> Path:
    """models/ with v1 as it was before issue 14: no zstd.dict, no "fallback" in its manifest."""
    d = tmp_path / "models"
    shutil.copytree(default_model_dir() / "v1", d / "v1")
    (d / "v1" / artifact.DICTIONARY).unlink()
    m = json.loads((d / "v1" / artifact.MANIFEST).read_text())
    del m["files"][artifact.DICTIONARY], m["fallback"]
    (d / "v1" / artifact.MANIFEST).write_text(json.dumps(m))
    (d / "CURRENT").write_text("v1\n")
    return d


def test_an_artifact_without_a_dictionary_names_what_is_missing(tmp_path, index):
    old = Registry(_no_dictionary_copy(tmp_path))
    assert old.fallback("v1") is None
    for e in index:
        with pytest.raises(UnknownVersionError, match=r"v1.*has no zstd\.dict.*install v1's current release"):
            old.decode((GOLDEN / e["file"]).read_bytes())
    # neural blobs are the same model's (the fingerprint did not move): both artifacts read each other's
    released = json.loads((ROOT / "tests" / "golden" / "v2" / "released" / "index.json").read_text())
    neural = [e for e in released if e["version"] == "v1"]
    for e in neural[:6]:
        assert old.decode((ROOT / "tests" / "golden" / "v2" / "released" / e["file"]).read_bytes()) == from_json(
            e["expected"])
    # and it writes no fallback blobs: the stub is the classical codec it has, as before
    blob = old.encode(EXAMPLE)
    assert blobfmt.peek_header(blob).encoder_id == 0 and old.decode(blob) == EXAMPLE
    assert old.stats.encodes == {"stub": 1} and old.stats.fallbacks == {"v1:larger": 1}


def test_another_dictionary_under_the_same_version_is_an_error_not_wrong_data(tmp_path, index):
    d = _no_dictionary_copy(tmp_path)
    other = train([r for r, _ in (to_raw(x["data"]) for x in sample_records(limit=400))], 16_384)
    artifact.attach_dictionary(d / "v1", other, {})
    reg = Registry(d)
    assert reg.fallback("v1").dictionary_sha256 != V1_DICTIONARY
    for e in index:
        with pytest.raises(CorruptBlobError, match="does not decode|checksum"):
            reg.decode((GOLDEN / e["file"]).read_bytes())


def test_a_damaged_fallback_body_is_an_error_or_the_exact_record(reg, index):
    for e in index:
        blob = (GOLDEN / e["file"]).read_bytes()
        payload = from_json(e["expected"])
        for i in range(len(blob) * 8):  # every bit of header and body
            bad = bytearray(blob)
            bad[i // 8] ^= 1 << (i % 8)
            _never_wrong(reg, bytes(bad), payload)
        for n in range(len(blob)):
            with pytest.raises(NBMFError):
                reg.decode(blob[:n])


def _rle_frame(blocks: int, window_exp: int = 7, size: int = 128 << 10) -> bytes:
    """A magicless zstd frame (no content size, no checksum) of ``blocks`` RLE blocks of ``size`` zeros: 4 bytes
    each."""
    out = bytearray([0x00, window_exp << 3])  # descriptor, window 2**(10+exp)
    for i in range(blocks):
        out += (int(i == blocks - 1) | 1 << 1 | size << 3).to_bytes(3, "little") + b"\x00"
    return bytes(out)


def _forge(body: bytes, length: int, encoder_id: int = 1, fingerprint: bytes | None = None) -> bytes:
    content = b"\x00" * length  # the checksum is right for the content a honest frame would give
    return blobfmt.pack_v2(encoder_id=encoder_id, fidelity=blobfmt.Fidelity.LOSSLESS, kind=blobfmt.Kind.BYTES,
                           content=content, body=body, fingerprint=fingerprint or bytes(32), fallback=True)


def test_a_zstd_bomb_is_refused_without_allocating_its_output(reg):
    bomb = _rle_frame(8192)  # 32 KB that zstd would inflate to 1 GiB
    assert zstandard.ZstdDecompressor().decompressobj().decompress(fallback.MAGIC + _rle_frame(2)) == bytes(256 << 10)
    fb = reg.fallback("v1")
    tracemalloc.start()
    try:
        with pytest.raises(CorruptBlobError, match="does not decode|decodes to"):
            reg.decode(_forge(bomb, 1000, fingerprint=fb.fingerprint))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # the header's 1,000 bytes (+1), not the frame's 1 GiB
    # a length the body cannot hold is refused before zstd runs; a frame of another form, unread
    with pytest.raises(CorruptBlobError, match="more than a"):
        reg.decode(_forge(b"\x00\x38\x03\x00\x00\x00", 6 * MAX_EXPANSION + 1), max_output_size=1 << 30)
    for flag in ("write_content_size", "write_checksum", "write_dict_id"):
        params = zstandard.ZstdCompressionParameters(format=zstandard.FORMAT_ZSTD1_MAGICLESS, **{flag: 1})
        dict_data = zstandard.ZstdCompressionDict(reg.fallback("v1").dictionary)
        other = zstandard.ZstdCompressor(compression_params=params, dict_data=dict_data).compress(b"\x00" * 64)
        with pytest.raises(CorruptBlobError, match="content size, dictionary id or checksum"):
            reg.decode(_forge(other, 64, fingerprint=fb.fingerprint))
    standard = fallback.compressor(reg.fallback("v1").dictionary).compress(b"\x00" * 64)  # with its magic number
    with pytest.raises(CorruptBlobError):
        reg.decode(_forge(standard, 64, fingerprint=fb.fingerprint))
    with pytest.raises(CorruptBlobError, match="window"):
        reg.decode(_forge(_rle_frame(2, window_exp=14), 256 << 10))
    assert 1 << (10 + 13) == MAX_WINDOW  # window_exp 13 is the largest accepted


@pytest.mark.parametrize("body", [b"", b"\x00", b"not zstd at all", _rle_frame(1, size=1024) + b"\x00",
                                  _rle_frame(1, size=1024) * 2, _rle_frame(1, size=1024)[:-1], _rle_frame(1, size=1023),
                                  _rle_frame(1, size=1025)])
def test_a_body_that_is_not_one_frame_of_the_length_is_corrupt(reg, body):
    """The content checksum holds for 1,024 zeros (what the frame alone gives back): only the frame checks refuse."""
    fp = reg.fallback("v1").fingerprint
    assert reg.decode(_forge(_rle_frame(1, size=1024), 1024, fingerprint=fp)) == bytes(1024)
    with pytest.raises(CorruptBlobError):
        reg.decode(_forge(body, 1024, fingerprint=fp))


def test_the_fallback_bit_on_a_stub_blob_is_corrupt(reg):
    body = reg.stub.encode_raw(b"hello")
    blob = blobfmt.pack_v2(encoder_id=0, fidelity=0, kind=0, content=b"hello", body=body,
                           fingerprint=reg.stub.fingerprint, fallback=True)
    with pytest.raises(CorruptBlobError, match="stub has no fallback"):
        reg.decode(blob)


def test_a_registry_without_the_version_says_so(index):
    with pytest.raises(UnknownVersionError, match="encoder v1; this registry holds stub"):
        Registry(None).decode((GOLDEN / index[0]["file"]).read_bytes())


# -- artifacts ---------------------------------------------------------------------------------------------
def test_a_modified_dictionary_is_refused_on_load(tmp_path):
    d = tmp_path / "v1"
    shutil.copytree(default_model_dir() / "v1", d)
    with open(d / artifact.DICTIONARY, "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    with pytest.raises(ArtifactError, match="zstd.dict"):
        fallback.load(d)
    with pytest.raises(ArtifactError, match="zstd.dict"):
        Registry(tmp_path, current="v1").fallback("v1")


def test_an_export_ships_its_dictionary_and_registration_keeps_it(tmp_path):
    art = tiny_artifact(tmp_path / "v1", steps=2, dict_size=4096)
    manifest = artifact.read_manifest(art)
    assert manifest["fallback"]["dictionary"] == artifact.DICTIONARY and manifest["fallback"]["bytes"] == 4096
    fb = fallback.load(art)
    assert isinstance(fb, FallbackCodec) and len(fb.dictionary) == 4096
    dest = modeldir.register(art, tmp_path / "models", "v1")
    assert (dest / artifact.DICTIONARY).read_bytes() == fb.dictionary
    moved = artifact.relabel(dest, tmp_path / "v2", "v2")
    assert fallback.load(moved).encoder_id == 2 and fallback.load(moved).fingerprint == fb.fingerprint
    with pytest.raises(ArtifactError, match="never replaced"):
        artifact.attach_dictionary(art, b"another dictionary", {})
    plain = tiny_artifact(tmp_path / "plain", steps=2)
    assert fallback.load(plain) is None and "fallback" not in artifact.read_manifest(plain)
