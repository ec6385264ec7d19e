"""The byte-level BPE: every byte sequence round-trips exactly; the vocabulary is dense and complete."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbmf.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    texts = [b'{"role": "user", "content": "Hello there!"}', "naïve café 😀 — ok".encode(), b"def f(x):\n    return x\n"]
    return Tokenizer.train(texts * 40, vocab_size=320)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_round_trip(tok, raw):
    assert tok.decode(tok.encode(raw)) == raw


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_any_text_round_trips_including_lone_surrogates(tok, text):
    raw = text.encode("utf-8", "surrogatepass")
    assert tok.decode(tok.encode(raw)) == raw


def test_merges_shorten_the_domain(tok):
    raw = b'{"role": "user", "content": "Hello there!"}'
    assert len(tok.encode(raw)) < len(raw) / 2


def test_save_load_is_identical(tok, tmp_path):
    tok.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    raw = "naïve café 😀".encode()
    assert list(again.encode(raw)) == list(tok.encode(raw)) and again.sha256() == tok.sha256()


def test_batch_encode_equals_single(tok):
    raws = [b"hello", b"\xff\xfe", "😀".encode(), b""]
    assert [list(x) for x in tok.encode_batch(raws)] == [list(tok.encode(r)) for r in raws]
