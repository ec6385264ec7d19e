"""Integer-only inference kernels (numba): the causal model over rows, and the coder loops around it.

Every value is an integer and every operation is exact integer arithmetic:
- int8 weights x int8 activations -> int32 dot products (nbmf.runtime.gemm; |acc| < 2**31 is proved there);
- requantization ``(acc * M + 2**(s-1)) >> s`` in int64 (Jacob et al. 2018, as gemmlowp/TFLite);
- RMS norm through an exact integer square root and integer division;
- GELU, sigmoid and exp through integer lookup tables stored in the artifact.

No float reaches a result, so nothing depends on summation order, SIMD width, thread count, batch
shape or CPU: the same tokens give the same frequency tables on any machine. (The one float op,
``sqrt`` of an integer, only seeds the exact integer square root and is corrected to it; the coder's
float64 quantization is exact and deterministic, see nbmf.runtime.coder.)

The model runs *layer by layer over rows*: a row is one token of one record (its slot). Rows of
different slots are records decoded in lockstep; consecutive rows of one slot are positions of one record
encoded in one pass. Each weight matrix meets all rows at once (``gemm``), and the per-row parts
(attention over the slot's cache, conv history, recurrent state) visit rows in order, so a slot's later
row sees its earlier rows exactly as in a token-by-token pass. Results never depend on how rows are grouped.
With NUMBA_DISABLE_JIT=1 the same code runs as plain Python: a slow reference.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import literally, njit

from nbmf.runtime import coder, match
from nbmf.runtime.gemm import KG, OB, gemm, gemm2_narrow, gemm_at, narrow_width
from nbmf.runtime.lookup import BYTES, LANES, lookup16, lookup16_bytes, lookup16_gaps, lookup64_bytes

ATTN, CONV, RECURRENT = 0, 1, 2
CHUNK = 64  # positions of one record per encode pass: the head's [64, vocab] int32 scratch stays in L2
BLOCK = 64  # symbols per block of the decoder's two-level table search
OK, BAD_QUANTILE, PAST_LENGTH, PAST_BODY = 0, 1, 2, 3  # per-record decode status


# -- parameter groups: every array by name, so two arrays of one dtype cannot trade places -----------------
class Linear(NamedTuple):
    """n weight matrices of one shape (one per layer that has it), packed for gemm, with requantization."""

    w: np.ndarray  # int8 [n, packed bytes] (nbmf.runtime.gemm.pack)
    bias: np.ndarray  # int32 [n, o_pad]: the activation offset, -128 * row sums
    m: np.ndarray  # int64 [n, n_out]: requantization multipliers in [2**30, 2**31)
    s: np.ndarray  # int64 [n, n_out]: requantization shifts in [1, 62]


class Attention(NamedTuple):
    qkv: Linear  # [3 * d, d] per attention layer
    score_m: np.ndarray  # int64 [n]: q.k -> 1/256 nat
    score_s: np.ndarray  # int64 [n]
    slopes: np.ndarray  # int64 [n, heads]: ALiBi slopes on the 1/256-nat grid
    lut: np.ndarray  # int32 [L]: exp(-x / 256) * 2**15


class Conv(NamedTuple):
    taps: np.ndarray  # int64 [n, kernel, d]
    m: np.ndarray  # int64 [n, d]
    s: np.ndarray  # int64 [n, d]
    dilation: np.ndarray  # int64 [n]
    lut: np.ndarray  # int64 [n, 255]: GELU on the int8 grid


class Recurrent(NamedTuple):
    zc: Linear  # [2 * d, d]: gate and candidate
    lut: np.ndarray  # int64 [n, 255]: sigmoid * 256


class Params(NamedTuple):
    emb: np.ndarray  # int64 [input vocab, d]: residual units
    norm_k: np.ndarray  # int64 [1]: sqrt(d) / norm scale * 256
    mixer_type: np.ndarray  # int64 [layers]: ATTN | CONV | RECURRENT
    mixer_idx: np.ndarray  # int64 [layers]: index within its mixer's group
    out: Linear  # [d, d] per layer: mixer output -> residual
    up: Linear  # [hidden, d] per layer
    act_lut: np.ndarray  # uint8 [layers, 256]: GELU of q in [-127, 127] at q + 127, as the next gemm's input (+128)
    down: Linear  # [d, hidden] per layer
    attn: Attention
    conv: Conv
    rec: Recurrent
    head: Linear  # [vocab, d], n = 1
    head_lut: np.ndarray  # int32 [L]: frequency of a token (max - logit) / 64 nat below the best, >= 1


class State(NamedTuple):
    """Per-slot caches, updated in place. Attention keys and values of the last W positions sit in a ring
    (position p in ring slot p % W), packed per head in the gemm layout, so that a query's scores and the
    weighted sum of values are two int8 products (see ``_attend``)."""

    kp: np.ndarray  # int8 [n_attn, slots, heads, packed bytes]: keys as a [W, d_head] matrix
    kb: np.ndarray  # int32 [n_attn, slots, heads, W padded to 64]: -128 * each key's sum (the query offset)
    vp: np.ndarray  # int8 [n_attn, slots, heads, packed bytes]: values as a [d_head, W] matrix, narrow blocks
    rstate: np.ndarray  # int64 [n_rec, slots, d]
    chist: np.ndarray  # int8 [n_conv, slots, history, d] (ring over positions)
    pos: np.ndarray  # int64 [slots]: tokens seen


class Work(NamedTuple):
    """Scratch for up to ``rows`` rows (one per thread)."""

    r: np.ndarray  # int64 [rows, d]: residual stream
    x: np.ndarray  # uint8 [rows, max k_pad]: the next gemm's input, offset +128
    acc: np.ndarray  # int32 [rows, max o_pad]: the last gemm's output
    rowpos: np.ndarray  # int64 [rows]: each row's position in its record
    q: np.ndarray  # int64 [3 * d]: one row's query, key and value
    koff: np.ndarray  # int64 [d_head]: packed offset of key dim cc (plus the column's base)
    voff: np.ndarray  # int64 [d_head]: packed offset of value dim cc
    xq: np.ndarray  # uint8 [1, d_head padded to 4]: one head's query, offset +128
    sacc: np.ndarray  # int32 [1, W padded to 64]: its scores
    sc: np.ndarray  # int64 [W]
    xe: np.ndarray  # uint8 [2, W padded to 4]: softmax weights e = 256 * xe[1] + xe[0] (0 outside the context)
    vacc: np.ndarray  # int32 [2, d_head padded to narrow_width(d_head)]
    vzero: np.ndarray  # int32 [d_head padded to narrow_width(d_head)]: the value product's bias (weights are not offset)
    gidx: np.ndarray  # uint8 [hidden padded to 64]: one row's GELU table indices
    freq: np.ndarray  # int64 [vocab]: one row's frequency table
    blocks: np.ndarray  # int64 [ceil(vocab / BLOCK)]: its block sums


# -- scalar helpers ------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _requant(acc, m, s):
    return (acc * m + (np.int64(1) << (s - np.int64(1)))) >> s  # |acc| < 2**31, m < 2**31: < 2**62


@njit(cache=True, inline="always")
def _clamp8(x):
    return min(np.int64(127), max(np.int64(-127), x))


@njit(cache=True)
def _isqrt(n):
    r = np.int64(np.sqrt(np.float64(n)))
    while r * r > n:
        r -= 1
    while (r + 1) * (r + 1) <= n:
        r += 1
    return r


@njit(nogil=True, cache=True)
def _norm_rows(r, n, k, x):
    """x[j, :d] = r_j / rms(r_j) on the int8 grid of 1/20, offset +128: r * k / (256 * isqrt(sum r^2))."""
    d = r.shape[1]
    for j in range(n):
        ss = np.int64(0)
        for c in range(d):
            ss += r[j, c] * r[j, c]
        if ss == 0:
            for c in range(d):
                x[j, c] = 128
            continue
        inv = (k << 32) // (_isqrt(ss) * 256)  # < 2**40 as k < 2**17; |r| < 2**22 keeps r * inv < 2**62
        for c in range(d):
            x[j, c] = np.uint8(_clamp8((r[j, c] * inv + (np.int64(1) << 31)) >> 32) + 128)


@njit(nogil=True, cache=True)
def _residual_add(r, acc, n, m, s):
    d = r.shape[1]
    for j in range(n):
        for c in range(d):
            r[j, c] += _requant(np.int64(acc[j, c]), m[c], s[c])


# -- mixers over rows (rows of one slot in order) ------------------------------------------------------------
# Each takes one layer's arrays once and indexes slots and rows inside: taking a view (st.kp[i, b], wk.x[j])
# per row costs two atomic reference counts each, which at these sizes is a sixth of the model's time.
@njit(nogil=True, cache=True, inline="always")
def packed_offset(row, col, n_groups, width):
    """Byte offset of w[row, col] in gemm's packed layout with n_groups groups of 4 inputs and blocks of
    ``width`` outputs (OB, or narrow_width for the values). A sum of a row part and a column part."""
    return (((row // width) * n_groups + col // KG) * width + row % width) * KG + col % KG


@njit(nogil=True, cache=True)
def _attention(m_q, s_q, score_m, score_s, slopes, lut, kp, kb, vp, slots, rowpos, n, acc, x, wk):
    """Attention of rows 0..n-1 (row j: slot slots[j], position rowpos[j]) from their qkv products acc[j]
    over this layer's caches kp, kb, vp [slots, heads, ...]; y -> x[j] (+128).

    Per row and head, the scores for the W ring slots are one gemm ([1, d_head] x keys) and the weighted sum
    of values two more (the weights' low and high bytes). Exact: |q.k| <= d_head * 127**2, and with
    e <= 2**15 the value sums are <= W * 255 * 127 per byte, 256 * hi + lo <= W * 2**15 * 127 < 2**31.
    """
    q, koff, voff, xq, sacc, sc, xe, vacc, vzero = wk.q, wk.koff, wk.voff, wk.xq, wk.sacc, wk.sc, wk.xe, wk.vacc, wk.vzero
    d = q.shape[0] // 3
    n_heads = slopes.shape[0]
    dh = d // n_heads
    window = sc.shape[0]
    last = np.uint64(lut.shape[0] - 1)
    k_bytes, v_bytes, w_pad = kp.shape[2], vp.shape[2], kb.shape[2]  # per head: keys, values, score outputs
    k_groups, v_groups = xq.shape[1] // KG, xe.shape[1] // KG
    vw = narrow_width(dh)  # values: blocks of vw outputs
    v_blocks = vzero.shape[0] // vw
    ldxe = xe.shape[1]
    for j in range(n):
        b, p = slots[j], rowpos[j]
        col = p % window
        for c in range(3 * d):  # q, k, v on the int8 grid
            q[c] = _clamp8(_requant(np.int64(acc[j, c]), m_q[c], s_q[c]))
        k_base = packed_offset(col, 0, k_groups, OB)  # + koff[cc]: key col, dim cc
        v_base = packed_offset(0, col, v_groups, vw)  # + voff[cc]: value dim cc, col
        for hd in range(n_heads):
            ksum = np.int64(0)
            for cc in range(dh):
                kv = q[d + hd * dh + cc]
                kp[b, hd, np.uint64(k_base + koff[cc])] = kv
                vp[b, hd, np.uint64(v_base + voff[cc])] = q[2 * d + hd * dh + cc]
                ksum += kv
            kb[b, hd, col] = -128 * ksum
        n_ctx = min(p + 1, window)  # ring slots 0..n_ctx-1 hold the last n_ctx positions
        for hd in range(n_heads):
            head = b * n_heads + hd
            for cc in range(dh):
                xq[0, cc] = np.uint8(q[hd * dh + cc] + 128)
            gemm_at(xq, 0, k_groups * KG, 1, kp, head * k_bytes, k_groups, w_pad // OB, kb, head * w_pad, sacc, 0, w_pad)
            slope = slopes[hd]
            best = np.int64(-(1 << 62))
            for w in range(min(col + 1, n_ctx)):  # ring slot w holds position p - (col - w) ...
                v = _requant(np.int64(sacc[0, w]), score_m, score_s) - slope * (col - w)
                sc[w] = v
                best = max(best, v)
            for w in range(col + 1, n_ctx):  # ... and past the ring's turn p - (col - w + W)
                v = _requant(np.int64(sacc[0, w]), score_m, score_s) - slope * (col - w + window)
                sc[w] = v
                best = max(best, v)
            total = np.int64(0)
            w = 0
            while w + LANES <= n_ctx:  # e = lut[best - score] in [0, 2**15]: low bytes -> xe[0], high -> xe[1]
                total += lookup16_bytes(lut, sc, w, best, last, xe, w, ldxe + w)
                w += LANES
            for w in range(w, n_ctx):
                e = np.int64(lut[min(np.uint64(best - sc[w]), last)])
                xe[0, w] = np.uint8(e & 255)
                xe[1, w] = np.uint8(e >> 8)
                total += e
            gemm2_narrow(xe, ldxe, vp, head * v_bytes, v_groups, v_blocks, vw, vzero, vacc, vacc.shape[1])
            # y = (2m + total) // (2 total) as float64: num and den are integers below 2**53, so the division is
            # correctly rounded to within |num / den| * 2**-53 < 1 / den of the true quotient, which is never
            # that close to an integer it is not; floor of the rounded quotient is the integer floor division.
            den = np.float64(2 * total)
            for cc in range(dh):
                m = 256 * np.int64(vacc[1, cc]) + np.int64(vacc[0, cc])
                y = np.int64(np.floor(np.float64(2 * m + total) / den))
                x[j, hd * dh + cc] = np.uint8(_clamp8(y) + 128)


@njit(nogil=True, cache=True)
def _conv(taps, m, s, dil, lut, chist, slots, rowpos, n, x):
    """Causal dilated depthwise conv of rows 0..n-1 over this layer's history chist [slots, history, d];
    the normed input is x[j] (+128), y -> x[j] (+128)."""
    n_hist = chist.shape[1]
    d = chist.shape[2]
    for j in range(n):
        b, p = slots[j], rowpos[j]
        ring = p % n_hist
        for c in range(d):
            chist[b, ring, c] = np.int8(np.int64(x[j, c]) - 128)
        for c in range(d):
            a = np.int64(0)
            for k in range(taps.shape[0]):
                q = p - k * dil
                if q < 0:
                    break
                a += taps[k, c] * np.int64(chist[b, q % n_hist, c])
            x[j, c] = np.uint8(lut[np.uint64(_clamp8(_requant(a, m[c], s[c])) + 127)] + 128)


@njit(nogil=True, cache=True)
def _recur(m, s, lut, rstate, slots, n, acc, x):
    """minGRU step of rows 0..n-1 from their zc products acc[j] and this layer's rstate [slots, d]; y -> x[j]."""
    d = rstate.shape[1]
    for j in range(n):
        b = slots[j]
        for c in range(d):
            z = lut[np.uint64(_clamp8(_requant(np.int64(acc[j, c]), m[c], s[c])) + 127)]
            cc = _clamp8(_requant(np.int64(acc[j, d + c]), m[d + c], s[d + c]))
            v = ((256 - z) * rstate[b, c] + z * cc * 256 + 128) >> 8
            rstate[b, c] = v
            x[j, c] = np.uint8(_clamp8((v + 128) >> 8) + 128)


@njit(nogil=True, cache=True)
def _gelu(m, s, table, n, acc, x, idx):
    """x[j] = GELU of the requantized up-projection acc[j]: the byte table[q + 127], 64 lookups at a time
    (the requantization loop alone vectorizes; a lookup inside it would keep it scalar)."""
    hidden = m.shape[0]
    full = hidden - hidden % BYTES
    ldx = x.shape[1]
    for j in range(n):
        for c in range(hidden):
            idx[c] = np.uint8(_clamp8(_requant(np.int64(acc[j, c]), m[c], s[c])) + 127)
        for c in range(0, full, BYTES):
            lookup64_bytes(table, idx, c, x, j * ldx + c)
        for c in range(full, hidden):
            x[j, c] = table[idx[c]]


# -- the model over rows -------------------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def forward(P, st, tokens, slots, n, wk):
    """Rows 0..n-1 (token tokens[j] of slot slots[j]) through every layer; the head's logits -> wk.acc.

    Advances each row's slot by one position; rows of one slot must come in order.
    """
    r, x, acc, rowpos = wk.r, wk.x, wk.acc, wk.rowpos
    for j in range(n):
        b = slots[j]
        rowpos[j] = st.pos[b]
        st.pos[b] += 1
        r[j, :] = P.emb[tokens[j]]
    k = P.norm_k[0]
    for layer in range(P.mixer_type.shape[0]):
        t = P.mixer_type[layer]
        i = P.mixer_idx[layer]
        _norm_rows(r, n, k, x)
        if t == ATTN:
            a = P.attn
            gemm(x, n, a.qkv.w[i], a.qkv.bias[i], acc)
            _attention(a.qkv.m[i], a.qkv.s[i], a.score_m[i], a.score_s[i], a.slopes[i], a.lut,
                       st.kp[i], st.kb[i], st.vp[i], slots, rowpos, n, acc, x, wk)
        elif t == CONV:
            cv = P.conv
            _conv(cv.taps[i], cv.m[i], cv.s[i], cv.dilation[i], cv.lut[i], st.chist[i], slots, rowpos, n, x)
        else:
            zc = P.rec.zc
            gemm(x, n, zc.w[i], zc.bias[i], acc)
            _recur(zc.m[i], zc.s[i], P.rec.lut[i], st.rstate[i], slots, n, acc, x)
        gemm(x, n, P.out.w[layer], P.out.bias[layer], acc)
        _residual_add(r, acc, n, P.out.m[layer], P.out.s[layer])
        _norm_rows(r, n, k, x)
        gemm(x, n, P.up.w[layer], P.up.bias[layer], acc)
        _gelu(P.up.m[layer], P.up.s[layer], P.act_lut[layer], n, acc, x, wk.gidx)
        gemm(x, n, P.down.w[layer], P.down.bias[layer], acc)
        _residual_add(r, acc, n, P.down.m[layer], P.down.s[layer])
    _norm_rows(r, n, k, x)
    gemm(x, n, P.head.w[0], P.head.bias[0], acc)


@njit(nogil=True, cache=True)
def table(m, s, lut, acc, j, freq, blocks):
    """Head products acc[j] -> next-token frequencies freq[v] in [1, 2**20] and their BLOCK sums; returns the total.

    (Inner helpers take arrays, not parameter groups, and a row index, not a row view: each costs atomic
    reference counts. The lookups go 16 at a time through ``lookup16``; in the scalar tail the index is cast
    to unsigned, as it is known to be >= 0, so numba skips its negative-index wraparound.)
    """
    return lookup_table(lut, freq, logits(m, s, acc, j, freq), blocks, False)[0]


@njit(nogil=True, cache=True)
def logits(m, s, acc, j, freq):
    """freq[v] = token v's logit in 1/64 nat (head products acc[j] requantized); returns the best."""
    vocab = freq.shape[0]
    best = np.int64(-(1 << 62))
    for v in range(vocab):  # logits in 1/64 nat
        lv = _requant(np.int64(acc[j, v]), m[v], s[v])
        freq[v] = lv
        best = max(best, lv)
    return best


@njit(nogil=True, cache=True)
def lookup_table(lut, freq, best, blocks, gapped):
    """Logits freq[v] (``logits``) -> frequencies lut[min(best - logit, last)] in place, their BLOCK sums; returns
    (total, e): e is the sum of f_v * min(best - logit_v, last) when ``gapped`` (a temperature's update,
    match.temper, in the same pass), else 0. ``gapped`` is a compile-time constant: each value compiles its own
    loop (``literally``), so the plain table pays nothing for the other."""
    literally(gapped)
    vocab = freq.shape[0]
    last = lut.shape[0] - 1
    total = np.int64(0)
    e = np.int64(0)  # f <= 2**20, gap <= last < 2**18, vocab < 2**17: < 2**55
    for b in range(blocks.shape[0]):
        sb = np.int64(0)
        v, end = b * BLOCK, min((b + 1) * BLOCK, vocab)
        while v + LANES <= end:
            if gapped:
                f, g = lookup16_gaps(lut, freq, v, best, last)
                sb += f
                e += g
            else:
                sb += lookup16(lut, freq, v, best, last)  # freq[v] = lut[min(best - logit, last)]: gap >= 0
            v += LANES
        for v in range(v, end):
            g = min(np.uint64(best - freq[v]), np.uint64(last))
            f = np.int64(lut[g])
            freq[v] = f
            sb += f
            if gapped:
                e += f * np.int64(g)
        blocks[b] = sb
        total += sb  # <= vocab * 2**20 < 2**53: exact as float64 in the coder
    return total, e


@njit(nogil=True, cache=True)
def frequencies(P, st, tokens, slots, wk, out):
    """out[j] = next-token frequencies after row j (float64 holding exact integers): the tables the coder uses."""
    n = tokens.shape[0]
    rows = wk.r.shape[0]
    hm, hs, acc, freq, blocks = P.head.m[0], P.head.s[0], wk.acc, wk.freq, wk.blocks
    for j0 in range(0, n, rows):
        m = min(rows, n - j0)
        forward(P, st, tokens[j0 : j0 + m], slots[j0 : j0 + m], m, wk)
        for j in range(m):
            table(hm, hs, P.head_lut, acc, j, freq, blocks)
            for v in range(out.shape[1]):
                out[j0 + j, v] = np.float64(freq[v])


@njit(nogil=True, cache=True)
def reset_slot(st, b):
    st.kp[:, b] = 0
    st.kb[:, b] = 0
    st.vp[:, b] = 0
    st.rstate[:, b] = 0
    st.chist[:, b] = 0
    st.pos[b] = 0


# -- coder loops ---------------------------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def neural_table(P, M, ms, r, acc, j, freq, blocks):
    """Row j's neural table for the record in slot r: (total, best logit, sum of f_v * gap_v). Without a
    temperature (M.temp[0] == 0) it is ``table`` and the other two are 0; with one, the gaps are looked up in the
    record's tempered lut row (nbmf.runtime.match), which gives the gap sum in the same pass."""
    hm, hs = P.head.m[0], P.head.s[0]
    if M.temp[0] == 0:
        return table(hm, hs, P.head_lut, acc, j, freq, blocks), np.int64(0), np.int64(0)
    best = logits(hm, hs, acc, j, freq)
    total, e = lookup_table(M.luts[match.level(M.temp, ms, r)], freq, best, blocks, True)
    return total, best, e


@njit(nogil=True, cache=True)
def after_token(head, M, ms, r, s, y, best, e, total, acc, j):
    """The adaptive state of the record in slot r after token y was coded from row j's head products acc[j]
    (``head``: P.head): the match model's (``s``: its prediction, or -1) and, with a temperature, theta by the neural
    table's (total, best, e) of ``neural_table`` and y's gap (its logit requantized as ``logits`` does)."""
    gap = np.int64(0)
    if M.temp[0] != 0:
        gap = min(best - _requant(np.int64(acc[j, y]), head.m[0, y], head.s[0, y]), M.luts.shape[1] - 1)
    after_gap(M, ms, r, s, y, e, total, gap)


@njit(nogil=True, cache=True)
def after_gap(M, ms, r, s, y, e, total, gap):
    """``after_token`` given token y's gap below the best logit, capped at the lut rows' last entry (a device
    runtime's tables give it)."""
    if s >= 0:
        match.observe(M.conf, ms, r, s, y)
    if M.temp[0] != 0:
        match.temper(M.temp, ms, r, e, total, gap)


@njit(nogil=True, cache=True)
def mix_match(conf, hit, ht, ms, r, x, base, t, freq, blocks, total):
    """The match model's boost (nbmf.runtime.match) on record r's table for its token t, its tokens so far being
    x[base : base + t]: returns (predicted token or -1, the new total). freq and its block sums change in place."""
    if conf[0] == 0:
        return -1, total
    s = match.predict(conf, ht, ms, r, x, base, t)
    if s < 0:
        return s, total
    b = match.boost(hit, ms[r, 1], freq[s], total)  # total + b < 2**53 (match.boost)
    freq[s] += b
    blocks[s // BLOCK] += b
    return s, total + b


@njit(nogil=True, cache=True)
def encode_records(P, M, st, wk, inputs, targets, starts, words, word_starts, lefts, probs, shortest):
    """Range-code records r = 0..: inputs[starts[r]:starts[r+1]] is [cond token, ids[:-1]], targets the ids.

    Each record is one slot-0 pass in chunks of wk rows; the match model M (``match.Match``; off for artifacts
    without one) adjusts each table before the token is coded. Writes its words at word_starts[r] (room for
    coder.max_words(n) each), sealed as ``shortest`` says (``coder.encoder_finish``: the body layout), and each
    token's coded interval to lefts/probs (for ``verify_records``); returns the number of words per record.
    """
    n_rec = starts.shape[0] - 1
    n_words = np.zeros(n_rec, np.int64)
    slots = np.zeros(wk.r.shape[0], np.int64)
    es = np.zeros(4, np.uint64)
    acc, freq, blocks = wk.acc, wk.freq, wk.blocks
    ht, ms = match.state(M.conf, 1)
    for rec in range(n_rec):
        a, b = starts[rec], starts[rec + 1]
        if b == a:
            continue
        reset_slot(st, 0)
        match.reset(ht, ms, 0)
        coder.encoder_init(es)
        out = words[word_starts[rec] :]
        k = 0
        for c0 in range(a, b, wk.r.shape[0]):
            m = min(wk.r.shape[0], b - c0)
            forward(P, st, inputs[c0 : c0 + m], slots, m, wk)
            for j in range(m):
                tn, best, e = neural_table(P, M, ms, 0, acc, j, freq, blocks)
                s, total = mix_match(M.conf, M.hit, ht, ms, 0, targets, a, c0 + j - a, freq, blocks, tn)
                k, left, prob = coder.encode_with_table(es, freq, total, targets[c0 + j], out, k)
                lefts[c0 + j] = left
                probs[c0 + j] = prob
                after_token(P.head, M, ms, 0, s, targets[c0 + j], best, e, tn, acc, j)
        n_words[rec] = coder.encoder_finish(es, out, k, shortest)
    return n_words


@njit(nogil=True, cache=True)
def coded_tables(P, M, st, wk, inputs, targets, out):
    """out[t] = the table token targets[t] of one record is coded with (float64 holding exact integers), inputs
    being [cond token, targets[:-1]]: ``encode_records``' steps without the coder (tests, cross-entropy)."""
    acc, freq, blocks = wk.acc, wk.freq, wk.blocks
    ht, ms = match.state(M.conf, 1)
    slots = np.zeros(wk.r.shape[0], np.int64)
    reset_slot(st, 0)
    match.reset(ht, ms, 0)
    n = targets.shape[0]
    for c0 in range(0, n, wk.r.shape[0]):
        m = min(wk.r.shape[0], n - c0)
        forward(P, st, inputs[c0 : c0 + m], slots, m, wk)
        for j in range(m):
            tn, best, e = neural_table(P, M, ms, 0, acc, j, freq, blocks)
            s, _ = mix_match(M.conf, M.hit, ht, ms, 0, targets, 0, c0 + j, freq, blocks, tn)
            for v in range(out.shape[1]):
                out[c0 + j, v] = np.float64(freq[v])
            after_token(P.head, M, ms, 0, s, targets[c0 + j], best, e, tn, acc, j)


@njit(nogil=True, cache=True)
def match_events(P, M, st, wk, inputs, targets, starts, length, f, total, hit):
    """What fitting a match model's table needs (``match.fit_table``): for every token the match model M predicts
    (its hit table ignored), the match length, the neural frequency of the predicted token, the table's total and
    whether the prediction was the token. Arrays of room len(targets); returns the number of events."""
    slots = np.zeros(wk.r.shape[0], np.int64)
    hm, hs, acc, freq, blocks = P.head.m[0], P.head.s[0], wk.acc, wk.freq, wk.blocks
    ht, ms = match.state(M.conf, 1)
    n = 0
    for rec in range(starts.shape[0] - 1):
        a, b = starts[rec], starts[rec + 1]
        reset_slot(st, 0)
        match.reset(ht, ms, 0)
        for c0 in range(a, b, wk.r.shape[0]):
            m = min(wk.r.shape[0], b - c0)
            forward(P, st, inputs[c0 : c0 + m], slots, m, wk)
            for j in range(m):
                s = match.predict(M.conf, ht, ms, 0, targets, a, c0 + j - a)
                if s < 0:
                    continue
                total[n] = table(hm, hs, P.head_lut, acc, j, freq, blocks)
                length[n] = ms[0, 1]
                f[n] = freq[s]
                hit[n] = s == targets[c0 + j]
                n += 1
                match.observe(M.conf, ms, 0, s, targets[c0 + j])
    return n


@njit(nogil=True, cache=True)
def take_symbol(r, sym, left, prob, ds, words, word_starts, piece_len, out, out_starts, n_out, tokens, remaining,
                status):
    """Record r decoded ``sym`` (coded as [left, left + prob)): advance its decoder, append the token, count its
    bytes, and stop it (remaining[r] = 0) with PAST_BODY or PAST_LENGTH when that overruns (``decode_records``)."""
    coder.decoder_advance(ds[r], left, prob, words, word_starts[r + 1])
    if np.int64(ds[r, 3]) - word_starts[r + 1] > coder.BODY_SLACK:
        status[r] = PAST_BODY
        remaining[r] = 0
        return
    if out_starts[r] + n_out[r] >= out_starts[r + 1]:  # no room left: more tokens than can be honest
        status[r] = PAST_LENGTH
        remaining[r] = 0
        return
    out[out_starts[r] + n_out[r]] = sym
    n_out[r] += 1
    tokens[r] = sym
    remaining[r] -= piece_len[sym]
    if remaining[r] < 0:
        status[r] = PAST_LENGTH
        remaining[r] = 0


@njit(nogil=True, cache=True)
def decode_records(P, M, st, wk, slots, first, words, word_starts, lengths, piece_len, out, out_starts, n_out,
                   status):
    """Decode records in lockstep: record r starts from token first[r], reads words[word_starts[r]:word_starts[r+1]]
    and stops when its tokens' pieces add up to lengths[r] bytes. Tokens -> out[out_starts[r]:out_starts[r + 1]],
    counts -> n_out. The match model M reads a record's tokens so far from out, as encode read them from its ids.

    status[r]: OK, BAD_QUANTILE (the body is no encoding under this model), PAST_LENGTH (the tokens overrun the
    length or the room in ``out``) or PAST_BODY (the decoder read more than coder.BODY_SLACK words past the body:
    it is damaged or forged). A failed record stops; the others go on.

    At most ``slots`` records are in flight (st has at least that many): records take slots in order and a finished
    record's slot, reset, goes to the next one. So a call of any size keeps its steps full until its last records,
    and its caches are the slots', not the call's. A record's tokens depend only on its body and its slot's state,
    so which slot it gets and which records share its steps change nothing.
    """
    n = first.shape[0]
    n_slots = min(slots, n)
    acc, freq, blocks = wk.acc, wk.freq, wk.blocks
    vocab = freq.shape[0]
    ds = np.zeros((n, 4), np.uint64)
    remaining = lengths.copy()
    tokens = first.copy()
    act_rec = np.empty(n_slots, np.int64)  # records in flight, and their slots
    act_slot = np.empty(n_slots, np.int64)
    free = np.arange(n_slots)[::-1].copy()  # slots free for the next records (a stack)
    n_free, n_active, next_r = n_slots, 0, 0
    ht, ms = match.state(M.conf, n_slots)
    rows = wk.r.shape[0]
    step_tokens = np.empty(rows, np.int64)
    while True:
        while n_free > 0 and next_r < n:  # admit the next records into free slots
            r = next_r
            next_r += 1
            n_out[r] = 0
            status[r] = OK
            if remaining[r] <= 0:
                continue
            n_free -= 1
            b = free[n_free]
            reset_slot(st, b)
            match.reset(ht, ms, b)
            coder.decoder_init(ds[r], words, word_starts[r], word_starts[r + 1])
            act_rec[n_active] = r
            act_slot[n_active] = b
            n_active += 1
        if n_active == 0:
            break
        for j0 in range(0, n_active, rows):
            m = min(rows, n_active - j0)
            for j in range(m):
                step_tokens[j] = tokens[act_rec[j0 + j]]
            forward(P, st, step_tokens, act_slot[j0 : j0 + m], m, wk)
            for j in range(m):
                r, b = act_rec[j0 + j], act_slot[j0 + j]
                tn, best, e = neural_table(P, M, ms, b, acc, j, freq, blocks)
                s, total = mix_match(M.conf, M.hit, ht, ms, b, out, out_starts[r], n_out[r], freq, blocks, tn)
                scale = coder.quant_scale(total, vocab)
                q = coder.decoder_quantile(ds[r])
                if q >= 1 << coder.PRECISION:
                    status[r] = BAD_QUANTILE
                    remaining[r] = 0
                    continue
                sym, left, prob = coder.find_symbol(freq, blocks, BLOCK, q, scale)
                take_symbol(r, sym, left, prob, ds, words, word_starts, piece_len, out, out_starts, n_out, tokens,
                            remaining, status)
                after_token(P.head, M, ms, b, s, sym, best, e, tn, acc, j)
        kept = 0
        for j in range(n_active):  # finished records give their slots back
            if remaining[act_rec[j]] > 0:
                act_rec[kept], act_slot[kept] = act_rec[j], act_slot[j]
                kept += 1
            else:
                free[n_free] = act_slot[j]
                n_free += 1
        n_active = kept


@njit(nogil=True, cache=True)
def init_decoders(ds, words, word_starts):
    """ds[r]: record r's range decoder at the start of words[word_starts[r]:word_starts[r + 1]]."""
    for r in range(ds.shape[0]):
        coder.decoder_init(ds[r], words, word_starts[r], word_starts[r + 1])


@njit(nogil=True, cache=True)
def quantiles(ds, rows, q):
    """q[j]: the quantile record rows[j]'s decoder stands at (``coder.decoder_quantile``)."""
    for j in range(rows.shape[0]):
        q[j] = coder.decoder_quantile(ds[rows[j]])


@njit(nogil=True, cache=True)
def take_found(rows, q, sym, prefix, freq, total, n, ds, words, word_starts, piece_len, out, out_starts, n_out,
               tokens, remaining, status):
    """``decode_records``' per-row step when another runtime (a GPU) searched the tables: record rows[j] at
    quantile q[j] found symbol sym[j] of n, with C_s = prefix[j], f_s = freq[j] and table sum total[j]. The
    interval is recomputed here with the coder's own arithmetic and must hold q[j]; returns how many rows it did
    not (a device whose arithmetic differs: those rows are left untouched for the caller to refuse)."""
    wrong = 0
    for j in range(rows.shape[0]):
        r = rows[j]
        if q[j] >= 1 << coder.PRECISION:
            status[r] = BAD_QUANTILE
            remaining[r] = 0
            continue
        left, prob = coder.interval_of(prefix[j], freq[j], sym[j], n, coder.quant_scale(total[j], n))
        if q[j] < left or q[j] >= left + prob:
            wrong += 1
            continue
        take_symbol(r, sym[j], left, prob, ds, words, word_starts, piece_len, out, out_starts, n_out, tokens,
                    remaining, status)
    return wrong


# -- what a device runtime (nbmf.runtime.torch_int) leaves to the host: the match model's per-record recursion --
# A device computes the neural table of every row; the match model and the temperature are a short sequential
# recursion per record over a few integers, run here with the same functions as encode_records/decode_records.
@njit(nogil=True, cache=True)
def match_predictions(M, targets, starts, pred, length):
    """Encode: pred[t] = the match model's prediction for token t (or -1) and length[t] its match length, for
    records r = 0.. with tokens targets[starts[r]:starts[r+1]]. They depend on the tokens alone (``match.predict``
    and ``match.observe``), not on any table, so a device can look the predicted tokens up in its tables."""
    ht, ms = match.state(M.conf, 1)
    for rec in range(starts.shape[0] - 1):
        a = starts[rec]
        match.reset(ht, ms, 0)
        for t in range(a, starts[rec + 1]):
            s = match.predict(M.conf, ht, ms, 0, targets, a, t - a) if M.conf[0] else np.int64(-1)
            pred[t] = s
            length[t] = ms[0, 1]
            if s >= 0:
                match.observe(M.conf, ms, 0, s, targets[t])


@njit(nogil=True, cache=True)
def matched_intervals(M, starts, targets, pred, length, total, expect, prefix, freq, f_pred, gap, out_prefix,
                      out_freq, out_total):
    """Encode: each token's coded (C_y, f_y, table sum) from a device's neural tables at every temperature level l
    ([tokens, levels]: the table's sum, its sum of f_v * gap_v, C and f of the token y, f of the predicted token)
    and the token's gap below the best logit (capped): record by record, the level is the record's temperature
    before the token (``match.level``), the match boost is mixed in (``mix_match``'s arithmetic) and the temperature
    moves (``after_gap``), so the result is the interval ``encode_records`` codes."""
    ht, ms = match.state(M.conf, 1)
    for rec in range(starts.shape[0] - 1):
        match.reset(ht, ms, 0)
        for t in range(starts[rec], starts[rec + 1]):
            lv = match.level(M.temp, ms, 0) if M.temp[0] else 0
            tn, s, y = total[t, lv], pred[t], targets[t]
            b = match.boost(M.hit, length[t], f_pred[t, lv], tn) if s >= 0 else np.int64(0)  # tn + b < 2**53
            out_prefix[t] = prefix[t, lv] + (b if 0 <= s < y else 0)
            out_freq[t] = freq[t, lv] + (b if s == y else 0)
            out_total[t] = tn + b
            after_gap(M, ms, 0, -1, y, expect[t, lv], tn, gap[t])  # (the match state moved in match_predictions)


@njit(nogil=True, cache=True)
def match_before_step(M, ht, ms, slots, rows, out, out_starts, n_out, lv, pred, lb):
    """Decode: before a device step, record rows[j] (its match state in slot slots[j] of ht, ms) gets its
    temperature level lv[j], its match prediction pred[j] (or -1; ``match.predict`` over its tokens so far in out)
    and the prediction's length bucket lb[j]."""
    for j in range(rows.shape[0]):
        b, r = slots[j], rows[j]
        lv[j] = match.level(M.temp, ms, b) if M.temp[0] else 0
        s = match.predict(M.conf, ht, ms, b, out, out_starts[r], n_out[r]) if M.conf[0] else np.int64(-1)
        pred[j] = s
        lb[j] = match.len_bucket(ms[b, 1]) if s >= 0 else 0


@njit(nogil=True, cache=True)
def match_after_step(M, ms, slots, pred, sym, expect, total, gap):
    """Decode: after the record in slot slots[j] decoded sym[j] from a table whose neural sum was total[j] (sum of
    f_v * gap_v: expect[j]; the symbol's gap: gap[j]), its match and temperature state move on (``after_gap``)."""
    for j in range(slots.shape[0]):
        after_gap(M, ms, slots[j], pred[j], sym[j], expect[j], total[j], gap[j])


@njit(nogil=True, cache=True)
def verify_records(words, word_starts, n_words, starts, lefts, probs):
    """True per record when its words decode back to the coded intervals (so to its tokens: cdf is strictly
    increasing, an interval names one symbol). The encoder's own check, without running the model again."""
    n_rec = starts.shape[0] - 1
    ok = np.ones(n_rec, np.bool_)
    ds = np.zeros(4, np.uint64)
    for rec in range(n_rec):
        w0 = word_starts[rec]
        coder.decoder_init(ds, words, w0, w0 + n_words[rec])
        for t in range(starts[rec], starts[rec + 1]):
            q = coder.decoder_quantile(ds)
            if q < lefts[t] or q >= lefts[t] + probs[t]:
                ok[rec] = False
                break
            coder.decoder_advance(ds, lefts[t], probs[t], words, w0 + n_words[rec])
    return ok

