"""Hostile blobs against the released model: forged lengths, forged bodies, another model under the same name.

Each test names the attack from issue 13 it closes; none of them times anything: work is bounded by counts.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from helpers.artifacts import sample_records
from nbmf import blob as blobfmt
from nbmf.artifact import WEIGHTS, sha256_file
from nbmf.errors import CorruptBlobError
from nbmf.modeldir import MANIFEST
from nbmf.registry import Registry, default_model_dir
from nbmf.runtime import coder, kernels, layouts


@pytest.fixture(scope="module")
def reg():
    r = Registry(default_model_dir())
    assert r.current != "stub"
    return r


@pytest.fixture(scope="module")
def codec(reg):
    return reg.codec(reg.current)


@pytest.fixture(scope="module")
def honest(reg):
    payloads = [r["data"] for r in sample_records(limit=40)]
    blobs = reg.encode_many(payloads)
    assert sum(blobfmt.peek_header(b).encoder_id != 0 for b in blobs) >= 30
    return payloads, blobs


def _forge(codec, body: bytes, length: int, kind=blobfmt.Kind.TEXT) -> bytes:
    return blobfmt.pack_v2(encoder_id=codec.encoder_id, fidelity=blobfmt.Fidelity.LOSSLESS, kind=kind,
                           content=b"x" * length, body=body, fingerprint=codec.fingerprint)


@pytest.mark.parametrize("body_size", [1, 5, 9, 64])
def test_a_length_the_body_cannot_hold_is_refused_before_any_work(reg, codec, body_size):
    """Was: a 7-9 byte blob claiming 16 MiB decoded for ~13 minutes (45 us per claimed byte)."""
    limit = codec.max_length(body_size)
    assert limit < 16 << 20 or body_size == 64
    claimed = limit + 1
    blob = blobfmt.pack(encoder_id=codec.encoder_id, fidelity=0, kind=0, original_length=claimed,
                        body=b"\x5a" * body_size)  # v1: the CRC holds, so only the bound can refuse it
    with pytest.raises(CorruptBlobError, match="more than a"):
        reg.decode(blob, max_output_size=1 << 40)


@pytest.mark.parametrize("seed", range(8))
def test_the_decoder_stops_a_few_words_past_a_forged_body(codec, seed):
    """A forged body with the largest length it may claim: the decoder gives up once it reads more than
    BODY_SLACK words past the body, long before the claimed length (the kernel's own count, not a clock)."""
    body = np.random.default_rng(seed).integers(0, 256, 12, dtype=np.uint8).tobytes()
    length = codec.max_length(len(body))
    first = np.array([codec.cfg.special_token(0, 0)], np.int64)
    tokens, status = codec.model.decode(first, [layouts.words_of_body(body, codec.model.body_layout)], np.array([length]), codec._piece_len,
                                        np.array([codec.max_tokens(len(body))]))
    assert status[0] in (kernels.PAST_BODY, kernels.BAD_QUANTILE)
    assert len(tokens[0]) <= codec.max_tokens(len(body))
    # every token the decoder took cost bits it read: a few words' worth, not a length's worth
    assert len(tokens[0]) < 32 * (3 + coder.BODY_SLACK + 1) * 4
    with pytest.raises(CorruptBlobError):
        codec.decode_many([(body, 0, length)])


def test_honest_bodies_fit_the_bound(codec, honest):
    """The bound refuses nothing honest: every real body's length is far inside it and decodes."""
    for blob in honest[1]:
        h, body = blobfmt.unpack(blob)
        if h.encoder_id:
            assert h.original_length <= codec.max_length(len(body))
            assert coder.stripped_words(len(layouts.words_of_body(body, codec.model.body_layout)) + 2, body) <= 2


def test_another_model_under_the_same_name_is_an_error_not_wrong_data(tmp_path, reg, honest):
    """Was: an artifact changed under the same version name (one weight differs, hashes recomputed) decoded
    honest blobs to different text with no error."""
    from safetensors.numpy import load_file, save_file

    src = default_model_dir() / reg.current
    dest = tmp_path / "models" / reg.current
    shutil.copytree(src, dest)
    params = load_file(str(dest / WEIGHTS))
    params["wh"] = params["wh"].copy()
    params["wh"][7, 3] = 1 if params["wh"][7, 3] != 1 else 2
    save_file(params, str(dest / WEIGHTS))
    manifest = json.loads((dest / MANIFEST).read_text())
    manifest["files"][WEIGHTS] = sha256_file(dest / WEIGHTS)
    (dest / MANIFEST).write_text(json.dumps(manifest))
    (tmp_path / "models" / "CURRENT").write_text(reg.current)
    other = Registry(tmp_path / "models")
    for payload, blob in zip(*honest):
        if blobfmt.peek_header(blob).encoder_id == 0:
            assert other.decode(blob) == payload
            continue
        with pytest.raises(CorruptBlobError, match="checksum|corrupted|forged"):
            other.decode(blob)


def test_a_damaged_neural_body_is_an_error_or_the_exact_record(reg, honest):
    payloads, blobs = honest
    rng = np.random.default_rng(0)
    wrong = 0
    for payload, blob in zip(payloads, blobs):
        h = blobfmt.peek_header(blob)
        for _ in range(40):
            bad = bytearray(blob)
            i = int(rng.integers(h.header_size, len(blob))) if len(blob) > h.header_size else 0
            bad[i] ^= 1 << int(rng.integers(0, 8))
            try:
                got = reg.decode(bytes(bad))
            except CorruptBlobError:
                continue
            wrong += got != payload
    assert wrong == 0


def test_records_over_the_neural_limit_skip_the_model(codec, honest):
    reg = Registry(default_model_dir(), neural_max_bytes=1000)
    texts = [p for p, b in zip(*honest) if isinstance(p, str) and blobfmt.peek_header(b).encoder_id]
    small = next(p for p in texts if len(p.encode()) <= 1000)
    large = next(p for p in texts if len(p.encode()) > 1000)
    blobs = reg.encode_many([small, large])
    headers = [blobfmt.peek_header(b) for b in blobs]
    assert [(h.version, h.fallback) for h in headers] == [(codec.name, False), (codec.name, True)]  # its zstd fallback
    assert reg.stats.fallbacks == {f"{codec.name}:large": 1}
    assert [reg.decode(b) for b in blobs] == [small, large]
