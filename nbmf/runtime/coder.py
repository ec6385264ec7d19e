"""Range coder in numba, bit-compatible with what v1 bodies were written with.

Released bodies were written by ``constriction`` 0.5 (``stream.queue.RangeEncoder``, 32-bit words and a
64-bit state, with ``stream.model.Categorical(perfect=False)``: a lazily quantized categorical at 24-bit
precision). This module is the same code as integer arithmetic the runtime can call per token without
leaving compiled code, so the model step, the tables and the coder run in one loop. constriction stays
the reference: tests/nbmf/test_coder.py checks words and symbols against it on real and random tables. Body
layout 2 (nbmf.runtime.layouts) keeps every word but the seal, which it makes the shortest the decoder can read.

The categorical model over n symbols with integer frequencies f (f_i >= 1, sum < 2**53):
    C_i = f_0 + ... + f_(i-1)                     (exact: every partial sum is an integer < 2**53)
    scale = float64(2**24 - n) / float64(C_n)     (one IEEE division)
    cdf(i) = trunc(float64(C_i) * scale) + i,  cdf(n) = 2**24
so every symbol keeps probability >= 1 / 2**24. Because the C_i are integers below 2**53, the float64
running sums constriction forms are exactly these C_i, whatever the summation order.
"""
from __future__ import annotations

import numpy as np
from numba import njit

PRECISION = 24
_P = np.uint64(PRECISION)
_W = np.uint64(32)
_ONE = np.uint64(1)
_WORD_MASK = np.uint64(0xFFFFFFFF)
_RANGE_FLOOR = np.uint64(1 << 32)  # the coder renormalizes when range drops below one word
_FULL = np.uint64(0xFFFFFFFFFFFFFFFF)
_TOTAL = 1 << PRECISION


@njit(nogil=True, cache=True, inline="always")
def cdf_at(c, i, scale):
    """cdf(i) for prefix sum c = C_i (an integer held in int64)."""
    return np.int64(np.float64(c) * scale) + i


@njit(nogil=True, cache=True)
def quant_scale(total, n):
    return np.float64(_TOTAL - n) / np.float64(total)


# -- encoder ------------------------------------------------------------------------------------------------
# Encoder state lives in a small int64/uint64 array so one record's coder can pause between kernel calls:
#   st[0] lower, st[1] range, st[2] number of inverted (held-back) words, st[3] first inverted word.


@njit(nogil=True, cache=True)
def encoder_init(st):
    st[0] = np.uint64(0)
    st[1] = _FULL
    st[2] = np.uint64(0)
    st[3] = np.uint64(0)


@njit(nogil=True, cache=True)
def _flush_inverted(st, carry, out, n_out):
    first = (st[3] + _ONE) & _WORD_MASK if carry else st[3]
    rest = np.uint32(0) if carry else np.uint32(0xFFFFFFFF)
    out[n_out] = np.uint32(first)
    n_out += 1
    for _ in range(1, np.int64(st[2])):
        out[n_out] = rest
        n_out += 1
    return n_out


@njit(nogil=True, cache=True)
def encode_symbol(st, left, prob, out, n_out):
    """Code one symbol with cumulative ``left`` and probability ``prob`` (on the 2**24 grid); returns n_out.

    ``out`` needs room for one word per symbol plus the held-back ones (see ``max_words``).
    """
    lower, rng = st[0], st[1]
    scale = rng >> _P
    rng = scale * np.uint64(prob)  # <= (range >> 24) << 24: no overflow
    new_lower = lower + scale * np.uint64(left)  # wraps modulo 2**64 like the reference
    if st[2] != 0 and new_lower + rng > new_lower:  # inverted -> normal: emit the held-back words
        n_out = _flush_inverted(st, new_lower < lower, out, n_out)
        st[2] = np.uint64(0)
    lower = new_lower
    if rng < _RANGE_FLOOR:
        rng = rng << _W
        word = lower >> _W
        lower = lower << _W
        if st[2] != 0:
            st[2] += _ONE
        elif lower + rng > lower:
            out[n_out] = np.uint32(word)
            n_out += 1
        else:
            st[2] = _ONE
            st[3] = word
    st[0], st[1] = lower, rng
    return n_out


@njit(nogil=True, cache=True)
def _shortest_point(lower, rng):
    """The point of [lower, lower + rng) (mod 2**64, a wrap being a carry) with the most trailing zero bits.
    A multiple of 2**k lies in it when the distance from lower up to the next one, (-lower) mod 2**k, is below
    rng; rng >= 2**32 after every step, so k = 32 always fits and the point's low word is 0."""
    up = (_FULL - lower) + _ONE  # 2**64 - lower, wrapping to 0 when lower = 0 (k = 64: the point 0)
    if up < rng:
        return lower + up
    for k in range(63, 32, -1):
        gap = up & ((_ONE << np.uint64(k)) - _ONE)
        if gap < rng:
            return lower + gap
    return lower + (up & _WORD_MASK)


@njit(nogil=True, cache=True)
def encoder_finish(st, out, n_out, shortest):
    """Seal: the words that pin the final interval. Returns n_out (unchanged when nothing was coded).

    ``shortest`` False (body layout 1): constriction's seal, the interval's first multiple of 2**32 as one word
    and, when the interval's end shares that word, a zero word. True (layout 2): the interval's point with the
    most trailing zero bits (``_shortest_point``), its high word only (its low word is 0). Both are read back by
    the same decoder, which takes zeros past the end."""
    lower, rng = st[0], st[1]
    if rng == _FULL:
        return n_out
    point = _shortest_point(lower, rng) if shortest else lower + (_RANGE_FLOOR - _ONE)
    if st[2] != 0:
        n_out = _flush_inverted(st, point < lower, out, n_out)
    point_word = point >> _W
    out[n_out] = np.uint32(point_word)
    n_out += 1
    if not shortest and ((lower + rng) >> _W) == point_word:
        out[n_out] = np.uint32(0)
        n_out += 1
    return n_out


def max_words(n_symbols: int) -> int:
    """Words an encoding of n symbols can take: one per symbol (each renormalizes at most once) + the seal."""
    return n_symbols + 3


# -- how far a decoder may read, and how much a body can hold ------------------------------------------------
# A body is the encoder's W words with trailing zero bytes dropped: S = ceil(len(body) / 4) words stored and
# z = W - S all-zero words dropped. The encoder emits one word per renormalization (R of them, some held back
# and flushed later) and 1 or 2 seal words, so W = R + 1 or R + 2. The decoder reads min(2, S) words at init
# and one per renormalization, in step with the encoder, so after the last symbol it has read up to index
# min(2, S) + R <= S + 1 + z. Words past the stored ones read as zero. Honest bodies drop z <= 1 words (the
# seal's zero word) except with probability ~2**-32 per extra zero word; the encoder keeps z <= BODY_SLACK - 1
# (``stripped_words``; a body that would drop more is not used), so an honest decode never reads more than
# BODY_SLACK words past what is stored. A decoder that needs more is reading a damaged or forged body: it stops.
# (v1 bodies written before this rule drop z >= 3 words with probability ~2**-64.)
BODY_SLACK = 3


def stripped_words(n_words: int, body: bytes) -> int:
    """z: the all-zero words the body dropped from the encoder's n_words."""
    return n_words - -(-len(body) // 4)


def min_symbol_bits(max_prob: float) -> float:
    """A lower bound on the bits any symbol costs when no table gives one symbol more than ``max_prob`` (before
    quantization, < 1). Quantization adds at most 2 / 2**24 to a probability (cdf(i) = trunc(C_i * scale) + i,
    the truncations moving each edge by < 1), and every other symbol keeps >= 1 / 2**24."""
    p = min(max_prob + 2.0 / _TOTAL, 1.0 - 1.0 / _TOTAL)
    return -float(np.log2(p)) * (1 - 1e-9)  # rounded down: bounds built on it stay upper bounds


def max_symbols(stored_words: int, symbol_bits: float) -> int:
    """Most symbols a decoder can take from a body of ``stored_words`` words before reading more than BODY_SLACK
    words past it, when each symbol costs at least ``symbol_bits`` (``min_symbol_bits``).

    Each step sets range' = (range >> 24) * prob <= range * p, with p = prob / 2**24, and the coder keeps
    2**32 <= range < 2**64 after every step (it renormalizes below 2**32 by 2**32). After N symbols and R
    renormalizations 2**32 <= 2**64 * (p_1 ... p_N) * 2**(32 R), so N * b <= 32 (R + 1) with b = -log2 of the
    largest p. Decoding stops when R > S + BODY_SLACK - min(2, S), so N <= 32 (S + BODY_SLACK + 1) / b.
    """
    return int(32 * (stored_words + BODY_SLACK + 1) / symbol_bits) + 1


# -- decoder ------------------------------------------------------------------------------------------------
# Decoder state: d[0] lower, d[1] range, d[2] point, d[3] index of the next word to read.


@njit(nogil=True, cache=True)
def decoder_init(d, words, start, end):
    point = np.uint64(0)
    k = start
    for _ in range(2):
        point = point << _W
        if k < end:
            point |= np.uint64(words[k])
            k += 1
    d[0] = np.uint64(0)
    d[1] = _FULL
    d[2] = point
    d[3] = np.uint64(k)


@njit(nogil=True, cache=True)
def decoder_quantile(d):
    """The 24-bit quantile the next symbol lies at; >= 2**24 means the body cannot be a valid encoding."""
    scale = d[1] >> _P
    return np.int64((d[2] - d[0]) // scale)


@njit(nogil=True, cache=True)
def decoder_advance(d, left, prob, words, end):
    scale = d[1] >> _P
    d[0] = d[0] + scale * np.uint64(left)
    rng = scale * np.uint64(prob)
    if rng < _RANGE_FLOOR:
        d[0] = d[0] << _W
        rng = rng << _W
        k = np.int64(d[3])
        nxt = np.uint64(0)
        if k < end:  # past the end the stream reads as zero words (trailing zeros are stripped from bodies)
            nxt = np.uint64(words[k])
        d[2] = (d[2] << _W) | nxt
        d[3] = np.uint64(k + 1)
    d[1] = rng


@njit(nogil=True, cache=True)
def find_symbol(freq, block_sums, block, q, scale):
    """(symbol, left, prob) with cdf(symbol) <= q < cdf(symbol + 1).

    ``block_sums[j]`` = sum of freq over [j * block, (j + 1) * block): the search walks blocks, then symbols.
    """
    n = freq.shape[0]
    c = np.int64(0)
    j = 0
    n_blocks = block_sums.shape[0]
    while j < n_blocks - 1:  # the last block holds the last symbol, whose right edge is 2**24
        end = (j + 1) * block
        c_end = c + block_sums[j]
        if cdf_at(c_end, end, scale) > q:
            break
        c = c_end
        j += 1
    i = j * block
    left = cdf_at(c, i, scale)
    while i < n - 1:
        c_next = c + freq[i]
        right = cdf_at(c_next, i + 1, scale)
        if right > q:
            return i, left, right - left
        c = c_next
        left = right
        i += 1
    return n - 1, left, _TOTAL - left


@njit(nogil=True, cache=True)
def interval_of(c, f, s, n, scale):
    """(left, prob) of symbol s of n with prefix sum c = C_s and frequency f = f_s: what the encoder codes."""
    left = cdf_at(c, s, scale)
    right = _TOTAL if s == n - 1 else cdf_at(c + f, s + 1, scale)
    return left, right - left


@njit(nogil=True, cache=True)
def symbol_interval(freq, s, scale):
    """(left, prob) of symbol s under the table freq."""
    c = np.int64(0)
    for i in range(s):
        c += freq[i]
    return interval_of(c, freq[s], s, freq.shape[0], scale)


@njit(nogil=True, cache=True)
def encode_with_table(st, freq, total, s, out, n_out):
    """Code symbol s under the integer table freq (summing to total): returns (n_out, left, prob)."""
    left, prob = symbol_interval(freq, s, quant_scale(total, freq.shape[0]))
    return encode_symbol(st, left, prob, out, n_out), left, prob


@njit(nogil=True, cache=True)
def code_prefix_sums(prefix, freq, total, targets, n, starts, words, word_starts, lefts, probs, shortest):
    """Range-code records r = 0..: token t in [starts[r], starts[r+1]) is symbol targets[t] of n, whose table has
    C_s = prefix[t], f_s = freq[t] and sum total[t] (a device runtime computes just these three per token). Writes
    words at word_starts[r] (room for max_words each) and the intervals to lefts/probs, like
    ``kernels.encode_records``, sealed as ``shortest`` says (``encoder_finish``); returns the number of words per
    record."""
    n_rec = starts.shape[0] - 1
    n_words = np.zeros(n_rec, np.int64)
    st = np.zeros(4, np.uint64)
    for rec in range(n_rec):
        if starts[rec + 1] == starts[rec]:
            continue
        encoder_init(st)
        out = words[word_starts[rec] :]
        k = 0
        for t in range(starts[rec], starts[rec + 1]):
            left, prob = interval_of(prefix[t], freq[t], targets[t], n, quant_scale(total[t], n))
            k = encode_symbol(st, left, prob, out, k)
            lefts[t] = left
            probs[t] = prob
        n_words[rec] = encoder_finish(st, out, k, shortest)
    return n_words
