"""Integer-only inference kernels (numba): one decode step of the causal model for a batch of records.

Every value is an integer and every operation is exact integer arithmetic:
- int8 weights (held as int16 for SIMD-friendly loops) x int8 activations -> int32 dot products;
- requantization ``(acc * M + 2**(s-1)) >> s`` in int64 (Jacob et al. 2018, as gemmlowp/TFLite);
- RMS norm through an exact integer square root and integer division;
- GELU, sigmoid and exp through integer lookup tables stored in the artifact.

No float reaches a result, so nothing depends on summation order, SIMD width, thread count, batch
shape or CPU: the same tokens give the same frequency tables on any machine. (The one float op,
``sqrt`` of an integer, only seeds the exact integer square root and is corrected to it.)
With NUMBA_DISABLE_JIT=1 the same code runs as plain Python: a slow reference.
"""
from __future__ import annotations

import numpy as np
from numba import njit

ATTN, CONV, RECURRENT = 0, 1, 2


@njit(cache=True, inline="always")
def _requant(acc, m, s):
    return (acc * m + (np.int64(1) << (s - np.int64(1)))) >> s


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


@njit(cache=True)
def _norm(r, out, k):
    """out = r / rms(r) on the int8 grid of 1/20: r * k / (256 * isqrt(sum r^2)), one division per vector."""
    ss = np.int64(0)
    for c in range(r.shape[0]):
        ss += r[c] * r[c]
    if ss == 0:
        out[:] = 0
        return
    inv = (k << 32) // (_isqrt(ss) * 256)  # < 2**40 as k < 2**17; |r| < 2**22 keeps r * inv < 2**62
    for c in range(r.shape[0]):
        out[c] = _clamp8((r[c] * inv + (np.int64(1) << 31)) >> 32)


@njit(cache=True)
def _matvec(w, x, acc):
    """acc[o] = sum_i w[o, i] * x[i]  (int16 x int16 -> int32: exact, |acc| < 2**31 by construction)."""
    n_out, n_in = w.shape
    for o in range(n_out):
        a = np.int32(0)
        for i in range(n_in):
            a += np.int32(w[o, i]) * np.int32(x[i])
        acc[o] = a


@njit(cache=True)
def step(tokens, slots, emb, norm_k, mixer_type, mixer_idx,
         wo, wo_m, wo_s, w1, w1_m, w1_s, act_lut, w2, w2_m, w2_s,
         qkv, qkv_m, qkv_s, score_m, score_s, slopes, attn_lut,
         taps, taps_m, taps_s, dilation, conv_lut,
         zc, zc_m, zc_s, sig_lut,
         wh, wh_m, wh_s, head_lut,
         kcache, vcache, rstate, chist, pos, freq):
    """Advance each record ``slots[j]`` by input token ``tokens[j]``; write its next-token frequencies.

    freq[j, v] >= 1 (float64 holding exact integers) are the next token's weights; the coder normalizes them.
    State (caches, recurrent states, conv histories, positions) is indexed by slot and updated in place.
    """
    d = emb.shape[1]
    n_layers = mixer_type.shape[0]
    n_heads = slopes.shape[1] if slopes.shape[0] > 0 else 1
    dh = d // n_heads
    window = kcache.shape[3]
    hist = chist.shape[2]
    hidden = w1.shape[1]
    vocab = wh.shape[0]
    r = np.zeros(d, np.int64)
    h = np.zeros(d, np.int16)
    y = np.zeros(d, np.int16)
    acc = np.zeros(max(3 * d, hidden, vocab), np.int32)
    g = np.zeros(hidden, np.int16)
    scores = np.zeros(window, np.int64)
    s32 = np.zeros(window, np.int32)
    logits = np.zeros(vocab, np.int64)
    e32 = np.zeros(window, np.int32)
    for j in range(tokens.shape[0]):
        b = slots[j]
        p = pos[b]
        for c in range(d):
            r[c] = emb[tokens[j], c]
        for layer in range(n_layers):
            _norm(r, h, norm_k)
            t = mixer_type[layer]
            i = mixer_idx[layer]
            if t == ATTN:
                _matvec(qkv[i], h, acc)
                ring = p % window
                kc = kcache[i, b]  # [d, window]: positions contiguous, so the loops below vectorize
                vc = vcache[i, b]
                for c in range(d):
                    h[c] = _clamp8(_requant(np.int64(acc[c]), qkv_m[i, c], qkv_s[i, c]))  # q (reuses h)
                    kc[c, ring] = _clamp8(_requant(np.int64(acc[d + c]), qkv_m[i, d + c], qkv_s[i, d + c]))
                    vc[c, ring] = _clamp8(_requant(np.int64(acc[2 * d + c]), qkv_m[i, 2 * d + c], qkv_s[i, 2 * d + c]))
                n_ctx = min(p + 1, window)  # ring slots 0..n_ctx-1 hold the last n_ctx positions
                # int32 is exact here: |q.k| <= dh * 127**2 and sum(e * v) <= window * 2**15 * 127 < 2**31
                for hd in range(n_heads):
                    for w in range(n_ctx):
                        s32[w] = 0
                    for c in range(hd * dh, (hd + 1) * dh):
                        qc = np.int32(h[c])
                        for w in range(n_ctx):
                            s32[w] += qc * np.int32(kc[c, w])
                    best = np.int64(-(1 << 62))
                    for w in range(n_ctx):
                        back = (p - w) % window
                        sc = _requant(np.int64(s32[w]), score_m[i], score_s[i]) - slopes[i, hd] * back
                        scores[w] = sc
                        best = max(best, sc)
                    total = np.int64(0)
                    for w in range(n_ctx):
                        e = np.int32(attn_lut[min(best - scores[w], attn_lut.shape[0] - 1)])
                        e32[w] = e
                        total += e
                    for c in range(hd * dh, (hd + 1) * dh):
                        m = np.int32(0)
                        for w in range(n_ctx):
                            m += e32[w] * np.int32(vc[c, w])
                        y[c] = _clamp8((2 * np.int64(m) + total) // (2 * total))
            elif t == CONV:
                ring = p % hist
                for c in range(d):
                    chist[i, b, ring, c] = h[c]
                for c in range(d):
                    a = np.int64(0)
                    for k in range(taps.shape[1]):
                        q = p - k * dilation[i]
                        if q < 0:
                            break
                        a += np.int64(taps[i, k, c]) * np.int64(chist[i, b, q % hist, c])
                    y[c] = conv_lut[i, _clamp8(_requant(a, taps_m[i, c], taps_s[i, c])) + 127]
            else:
                _matvec(zc[i], h, acc)
                for c in range(d):
                    z = sig_lut[i, _clamp8(_requant(np.int64(acc[c]), zc_m[i, c], zc_s[i, c])) + 127]
                    cc = _clamp8(_requant(np.int64(acc[d + c]), zc_m[i, d + c], zc_s[i, d + c]))
                    s = ((256 - z) * rstate[i, b, c] + z * cc * 256 + 128) >> 8
                    rstate[i, b, c] = s
                    y[c] = _clamp8((s + 128) >> 8)
            _matvec(wo[layer], y, acc)
            for c in range(d):
                r[c] += _requant(np.int64(acc[c]), wo_m[layer, c], wo_s[layer, c])
            _norm(r, h, norm_k)
            _matvec(w1[layer], h, acc)
            for c in range(hidden):
                g[c] = act_lut[layer, _clamp8(_requant(np.int64(acc[c]), w1_m[layer, c], w1_s[layer, c])) + 127]
            _matvec(w2[layer], g, acc)
            for c in range(d):
                r[c] += _requant(np.int64(acc[c]), w2_m[layer, c], w2_s[layer, c])
        _norm(r, h, norm_k)
        _matvec(wh, h, acc)
        best = np.int64(-(1 << 62))
        for v in range(vocab):
            lv = _requant(np.int64(acc[v]), wh_m[v], wh_s[v])
            logits[v] = lv
            best = max(best, lv)
        last = head_lut.shape[0] - 1
        for v in range(vocab):  # integers <= 2**20, exact in float64: the coder takes them as they are
            freq[j, v] = np.float64(head_lut[min(best - logits[v], last)])
        pos[b] = p + 1
