"""The numba range coder against constriction, the coder the released bodies were written with.

Same words for the same tables and symbols, same symbols back, and the same verdict on bodies that are
no encoding at all, over uniform, peaked (carries and held-back words) and heavy-tailed tables.
"""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from nbmf.runtime import coder, layouts

constriction = pytest.importorskip("constriction")
FAMILY = constriction.stream.model.Categorical(perfect=False)


@njit(cache=True)
def _encode(freqs, symbols, shortest=False):
    st = np.zeros(4, np.uint64)
    coder.encoder_init(st)
    out = np.zeros(len(symbols) + 3, np.uint32)  # coder.max_words
    n = 0
    for t in range(len(symbols)):
        f = freqs[t]
        total = f.sum()
        left, prob = coder.symbol_interval(f, symbols[t], coder.quant_scale(total, f.shape[0]))
        n = coder.encode_symbol(st, left, prob, out, n)
    return out[: coder.encoder_finish(st, out, n, shortest)]


@njit(cache=True)
def _decode(freqs, words, block):
    d = np.zeros(4, np.uint64)
    coder.decoder_init(d, words, 0, len(words))
    out = np.zeros(freqs.shape[0], np.int64)
    vocab = freqs.shape[1]
    sums = np.zeros(-(-vocab // block), np.int64)
    for t in range(freqs.shape[0]):
        f = freqs[t]
        for j in range(sums.shape[0]):
            sums[j] = f[j * block : (j + 1) * block].sum()
        q = coder.decoder_quantile(d)
        if q >= 1 << coder.PRECISION:
            return out, t
        s, left, prob = coder.find_symbol(f, sums, block, q, coder.quant_scale(f.sum(), vocab))
        coder.decoder_advance(d, left, prob, words, len(words))
        out[t] = s
    return out, -1


def _tables(rng, mode: int, n: int, vocab: int) -> np.ndarray:
    if mode == 0:
        return rng.integers(1, 2**20, (n, vocab))
    if mode == 1:  # the runtime's shape: 2**20 * exp(-gap / 64), floored at 1
        return np.maximum(1, np.round(2**20 * np.exp(-rng.exponential(200, (n, vocab)) / 64))).astype(np.int64)
    f = np.ones((n, vocab), np.int64)  # one token takes nearly everything: long runs of held-back words
    f[np.arange(n), rng.integers(0, vocab, n)] = 2**20
    return f


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("vocab", [2, 3, 64, 2048, 5000])
def test_words_and_symbols_match_constriction(mode, vocab):
    rng = np.random.default_rng(vocab * 10 + mode)
    for n in (0, 1, 2, 37, 600):
        freqs = _tables(rng, mode, n, vocab)
        likely = freqs.argmax(axis=1) if n else np.zeros(0, np.int64)
        symbols = np.where(rng.random(n) < 0.8, likely, rng.integers(0, vocab, n)).astype(np.int64)
        enc = constriction.stream.queue.RangeEncoder()
        if n:
            enc.encode(symbols.astype(np.int32), FAMILY, freqs.astype(np.float64))
        want = enc.get_compressed()
        got = _encode(freqs, symbols)
        assert np.array_equal(got, want)
        for block in (64, 7):
            back, err = _decode(freqs, got, block)
            assert err == -1 and np.array_equal(back, symbols)


def test_garbage_gets_constrictions_verdict():
    rng = np.random.default_rng(7)
    for trial in range(200):
        freqs = _tables(rng, trial % 3, int(rng.integers(1, 60)), int(rng.choice([2, 64, 2048])))
        words = rng.integers(0, 2**32, int(rng.integers(0, 6)), dtype=np.uint64).astype(np.uint32)
        try:
            want, failed = constriction.stream.queue.RangeDecoder(words).decode(FAMILY, freqs.astype(np.float64)), False
        except Exception:
            want, failed = None, True
        got, err = _decode(freqs, words, 64)
        assert (err != -1) == failed
        if not failed:
            assert np.array_equal(got, want)


def _decodes_to(freqs, body: bytes, layout: int, symbols) -> bool:
    back, err = _decode(freqs, layouts.words_of_body(body, layout), 64)
    return err == -1 and np.array_equal(back, symbols)


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("vocab", [2, 64, 2048])
def test_layout_2_bodies_decode_and_are_the_shortest(mode, vocab):
    """Layout 2 (big-endian words, the shortest seal) gives the symbols back, and no body one byte shorter
    does: the seal is the point of the final interval with the most trailing zero bits, and cutting its last
    nonzero byte gives a point with more, so one outside the interval. Peaked tables (mode 2) end in held-back
    words with and without a carry."""
    rng = np.random.default_rng(vocab * 10 + mode + 1)
    saved = []
    for trial in range(60):
        n = int(rng.integers(1, 300))
        freqs = _tables(rng, mode, n, vocab)
        symbols = np.where(rng.random(n) < 0.8, freqs.argmax(axis=1), rng.integers(0, vocab, n)).astype(np.int64)
        body = layouts.body_of_words(_encode(freqs, symbols, True), 2)
        assert _decodes_to(freqs, body, 2, symbols)
        assert not _decodes_to(freqs, body[:-1], 2, symbols)
        old = layouts.body_of_words(_encode(freqs, symbols, False), 1)
        assert _decodes_to(freqs, old, 1, symbols)
        saved.append(len(old) - len(body))
    assert np.mean(saved) > 1  # layout 1's seal is a whole word; layout 2's ~2.5 bytes on average
