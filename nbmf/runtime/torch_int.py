"""The integer runtime on torch devices (a GPU for bulk work): the same integers as nbmf.runtime.kernels.

Exactness: every product sums products of small integers, in a type whose every partial sum is exact, so
cuBLAS, any summation order, any batch and any device give the kernel's integers:
    weight products  float64. |x| <= 127 (int8 activations), |w| <= 127, at most mlp_mult * d_model <= 64 * 4096
                     terms (ModelConfig's bounds): 2**18 * 127**2 < 2**32, far below 2**53;
    attention scores float64. |q|, |k| <= 127 over d_head <= 4096 terms: < 2**26;
    attention values float64. e <= 2**15 (attn_lut), |v| <= 127, window <= MAX_WINDOW keys: < 2**31.
Everything else is int64 tensor arithmetic, written as the kernel writes it. The coder's float64 step (the
quantized cdf) runs in numba on the host from three integers per token: C_s, f_s and the table's sum. When
decoding, the device searches the table for the decoder's quantile and the host recomputes the found
symbol's interval with the coder's own arithmetic and checks that it holds the quantile (``kernels.take_found``),
so a device whose floating point disagreed would raise, never decode a wrong token.

Encode is one pass over all positions of many records at once (as in training); decode steps records in
lockstep, one token each, and refills a finished record's slot with the next record. Only for hosts with torch:
the codec itself encodes and decodes with numpy + numba (``load_codec(..., device=None)``).
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nbmf.runtime import coder, kernels, layouts
from nbmf.runtime import match as match_model
from nbmf.runtime.intmodel import IntModel, decode_buffers

ATTN, CONV, RECURRENT = kernels.ATTN, kernels.CONV, kernels.RECURRENT
_BIG = 1 << 62  # below every score a valid key can have


class TorchIntModel:
    """``IntModel``'s ``encode``/``decode``/``step`` on a torch ``device``, bit-identical to it.

    ``tokens``: positions per encode pass (records x padded length), bounds device memory (~100 KB each);
    ``slots``: records decoded in lockstep; ``host_threads``: threads that meanwhile decode the longest records
    with the CPU kernel (``decode``).
    """

    def __init__(self, model: IntModel, device: str = "cpu", tokens: int | None = None, slots: int | None = None,
                 host_threads: int = 0):
        import torch

        self.torch, self.device, self.cfg, self.model = torch, torch.device(device), model.cfg, model
        gpu = self.device.type != "cpu"
        self.tokens = int(tokens or (1 << 17 if gpu else 1 << 12))
        self.slots = int(slots or (4096 if gpu else 64))
        t = {k: torch.from_numpy(np.asarray(v).astype(np.int64)).to(self.device) for k, v in model.params.items()}
        self.p = t
        self.f64 = {k: t[k].double() for k in ("wo", "w1", "w2", "qkv", "zc", "wh")}
        self.window = self.cfg.context
        self.heads = self.cfg.n_heads
        self.vocab = self.cfg.vocab_size
        self.layers = [(int(t["mixer_type"][j]), int(t["mixer_idx"][j])) for j in range(len(t["mixer_type"]))]
        self.norm_k = int(model.params["norm_k"])  # python ints: a CUDA graph cannot read a tensor back mid-step
        self.dilation = [int(x) for x in model.params["dilation"]]
        self.host_threads = int(host_threads)
        self.graphs = True  # CUDA: replay decode steps as CUDA graphs (False: launch each kernel, to compare)
        m = model.match  # the match model (nbmf.runtime.match), when the artifact ships one: its tables by level
        self.matched = bool(m.conf[0])
        self.luts = torch.as_tensor(m.luts if m.temp[0] else model.params["head_lut"][None], device=self.device).long()
        self.hit = torch.as_tensor(m.hit, device=self.device)

    # -- shared arithmetic (each line as kernels.py writes it) ------------------------------------------------
    def _requant(self, acc, m, s):
        return (acc * m + (1 << (s - 1))) >> s

    def _clamp8(self, x):
        return x.clamp(-127, 127)

    def _matvec(self, w64, x):  # [..., I] x [O, I] -> [..., O], exact (module docstring)
        return (x.double() @ w64.T).round().long()

    def _norm(self, r):
        torch = self.torch
        ss = (r * r).sum(-1)
        isq = torch.sqrt(ss.double()).long()  # a seed, corrected to the exact integer square root
        isq = isq - (isq * isq > ss).long()
        isq = isq + ((isq + 1) * (isq + 1) <= ss).long()
        inv = (self.norm_k << 32) // (isq.clamp_min(1) * 256)
        out = self._clamp8((r * inv[..., None] + (1 << 31)) >> 32)
        return torch.where((ss == 0)[..., None], torch.zeros_like(out), out)

    def _lookup_max(self, x, lut):
        """lut[min(max(x) - x, len - 1)] along the last axis: softmax-like weights on the integer grid."""
        idx = (x.max(-1, keepdim=True).values - x).clamp(max=lut.shape[0] - 1)
        return lut[idx]

    def _mlp(self, r, layer, y):
        p = self.p
        r = r + self._requant(self._matvec(self.f64["wo"][layer], y), p["wo_m"][layer], p["wo_s"][layer])
        h = self._norm(r)
        a = self._clamp8(self._requant(self._matvec(self.f64["w1"][layer], h), p["w1_m"][layer], p["w1_s"][layer]))
        g = p["act_lut"][layer][a + 127]
        return r + self._requant(self._matvec(self.f64["w2"][layer], g), p["w2_m"][layer], p["w2_s"][layer])

    def _logits(self, r):
        """Logits [..., vocab] int64 (1/64 nat) after the final norm and the output layer."""
        p = self.p
        return self._requant(self._matvec(self.f64["wh"], self._norm(r)), p["wh_m"], p["wh_s"])

    def _table(self, r):
        """Frequency tables [..., vocab] int64: the logits through head_lut."""
        return self._lookup_max(self._logits(r), self.p["head_lut"])

    def _gaps(self, lv):
        """Each logit's distance below its row's best, capped at the level tables' last entry (their index)."""
        g = lv.max(-1, keepdim=True).values - lv
        return g.clamp(max=self.luts.shape[1] - 1)

    def _boost(self, f, total, s, lb):
        """``match.boost`` on rows: B >= 0 for predicted tokens s (0 where s < 0) with neural f_s = f and sum
        total, match length bucket lb. Integers as match.py writes them (bounds there)."""
        torch, one = self.torch, match_model.HIT_ONE
        u = (f << match_model.HIT_BITS) // total

        def bit_length(v):  # v <= 2**15
            return (v[:, None] >= (1 << torch.arange(17, device=self.device))[None, :]).sum(-1)

        pb = torch.where(u < one // 2, bit_length(u), (30 - bit_length(one - u)).clamp(max=match_model.PROB_BUCKETS - 1))
        q = self.hit[lb, pb]
        num = q * total - (f << match_model.HIT_BITS)
        return torch.where((num > 0) & (s >= 0), num.clamp_min(0) // (one - q), torch.zeros_like(num))

    def _attend(self, sc, valid, weigh):
        """Scores sc [..., keys] (distance penalty applied) -> int8 outputs [..., d_head]; ``weigh(e)`` gives the
        values' sums weighted by the softmax weights e [..., keys] (int64)."""
        sc = sc.masked_fill(~valid, -_BIG)
        e = self._lookup_max(sc, self.p["attn_lut"]).masked_fill(~valid, 0)
        total = e.sum(-1, keepdim=True)
        return self._clamp8(self.torch.div(2 * weigh(e) + total, 2 * total, rounding_mode="floor"))

    # -- decode: one token per record ---------------------------------------------------------------------------
    def new_state(self, batch: int) -> dict:
        m, d, w, h, torch = self.model, self.cfg.d_model, self.window, self.heads, self.torch
        cache = (m.n_attn, batch, h, w, d // h)  # float64: the attention's batched products read them as they are
        shapes = {"kcache": (cache, torch.float64), "vcache": (cache, torch.float64), "pos": ((batch,), torch.int64),
                  "rstate": ((m.n_rec, batch, d), torch.int64), "chist": ((m.n_conv, batch, m.history, d), torch.int64)}
        return {k: torch.zeros(v, dtype=t, device=self.device) for k, (v, t) in shapes.items()}

    def step(self, state: dict, tokens, slots):
        """One token for each record ``slots[j]`` (distinct slots): frequency tables [len(tokens), vocab] int64."""
        torch = self.torch
        every = np.array_equal(np.asarray(slots), np.arange(state["pos"].shape[0]))  # all slots: no gathers
        lv = self._step(state, torch.as_tensor(np.asarray(tokens), device=self.device).long(),
                        torch.as_tensor(np.asarray(slots), device=self.device).long(), every)
        return self._lookup_max(lv, self.p["head_lut"])

    def _step(self, state: dict, tokens, b, every: bool, fresh=None):
        """``step`` on device tensors, up to the logits. ``fresh`` (0/1 per row): rows whose record starts here, as in a new state.
        Only the position and the recurrent state need resetting for it: every other read of a slot is of
        entries this record wrote (attention keys at ring slots <= pos, conv history at positions >= 0; other
        entries are masked, and a masked weight of 0 times a stale finite value adds 0)."""
        torch, p = self.torch, self.p
        d, w, nh = self.cfg.d_model, self.window, self.heads
        pos = state["pos"][b]
        if fresh is not None:
            pos = pos * (1 - fresh)
        r = p["emb"][tokens].clone()
        for layer, (t, i) in enumerate(self.layers):
            h = self._norm(r)
            if t == ATTN:
                qkv = self._clamp8(self._requant(self._matvec(self.f64["qkv"][i], h), p["qkv_m"][i], p["qkv_s"][i]))
                q, k, v = (x.view(-1, nh, d // nh) for x in (qkv[:, :d], qkv[:, d : 2 * d], qkv[:, 2 * d :]))
                ring = pos % w
                state["kcache"][i, b, :, ring] = k.double()
                state["vcache"][i, b, :, ring] = v.double()
                kc = state["kcache"][i] if every else state["kcache"][i, b]  # [n, heads, W, d_head]
                vc = state["vcache"][i] if every else state["vcache"][i, b]
                slot = torch.arange(w, device=self.device)
                valid = (slot[None, :] <= pos[:, None])[:, None, None, :]  # ring slots filled so far
                back = ((pos[:, None] - slot[None, :]) % w)[:, None, None, :]  # their distance from this token
                # (a product and a sum instead of these batched GEMVs measured 1.5x slower per step on an H100)
                s32 = (q.double()[:, :, None, :] @ kc.transpose(-1, -2)).round().long()  # [n, heads, 1, W]
                sc = self._requant(s32, p["score_m"][i], p["score_s"][i]) - p["slopes"][i][None, :, None, None] * back
                y = self._attend(sc, valid, lambda e: (e.double() @ vc).round().long()).reshape(-1, d)
            elif t == CONV:
                hist = state["chist"].shape[2]
                state["chist"][i, b, pos % hist] = h
                a = torch.zeros_like(h)
                for k in range(p["taps"].shape[1]):
                    q = pos - k * self.dilation[i]
                    ok = (q >= 0).long()[:, None]
                    a = a + ok * p["taps"][i, k][None, :] * state["chist"][i, b, q.clamp_min(0) % hist]
                y = p["conv_lut"][i][self._clamp8(self._requant(a, p["taps_m"][i], p["taps_s"][i])) + 127]
            else:
                z, cc = self._gates(i, h)
                prev = state["rstate"][i, b] if fresh is None else state["rstate"][i, b] * (1 - fresh)[:, None]
                s = ((256 - z) * prev + z * cc * 256 + 128) >> 8
                state["rstate"][i, b] = s
                y = self._clamp8((s + 128) >> 8)
            r = self._mlp(r, layer, y)
        state["pos"][b] = pos + 1
        return self._logits(r)

    def _gates(self, i, h):
        p, d = self.p, self.cfg.d_model
        acc = self._matvec(self.f64["zc"][i], h)
        z = p["sig_lut"][i][self._clamp8(self._requant(acc[..., :d], p["zc_m"][i, :d], p["zc_s"][i, :d])) + 127]
        cc = self._clamp8(self._requant(acc[..., d:], p["zc_m"][i, d:], p["zc_s"][i, d:]))
        return z, cc

    def frequencies(self, sequence) -> np.ndarray:
        """Tables after each prefix of one record's input sequence, from the all-positions pass: [len, vocab]."""
        x = self.torch.as_tensor(np.asarray(sequence, np.int64), device=self.device)[None]
        return self._table(self.forward(self._pad(x))[0, : len(sequence)]).cpu().numpy()

    # -- encode: every position at once ---------------------------------------------------------------------------
    def _pad(self, x):
        """x [B, T] padded with token 0 to whole attention windows (positions after a record's end change
        nothing before it: the model is causal)."""
        t = x.shape[1]
        return self.torch.nn.functional.pad(x, (0, -(-t // self.window) * self.window - t))

    def forward(self, x):
        """Final residuals [B, T, d] for input tokens x [B, T] (T a multiple of the window), every position in one
        pass: position t of row b is what ``step`` gives for the t-th token of a record in slot b."""
        torch, p = self.torch, self.p
        n, t_len = x.shape
        d, w, nh = self.cfg.d_model, self.window, self.heads
        r = p["emb"][x]
        for layer, (t, i) in enumerate(self.layers):
            h = self._norm(r)
            if t == ATTN:
                qkv = self._clamp8(self._requant(self._matvec(self.f64["qkv"][i], h), p["qkv_m"][i], p["qkv_s"][i]))
                nb = t_len // w  # blocks of w queries; block j attends to keys in blocks j - 1 and j

                def blocks(z):  # [B, T, d] -> [B, nb, heads, w, d_head] float64
                    return z.reshape(n, nb, w, nh, d // nh).permute(0, 1, 3, 2, 4).double()

                q, k, v = blocks(qkv[..., :d]), blocks(qkv[..., d : 2 * d]), blocks(qkv[..., 2 * d :])
                prev = torch.nn.functional.pad(k, (0, 0, 0, 0, 0, 0, 1, 0))[:, :-1]  # block j - 1 (zeros for j = 0)
                kk = torch.cat([prev, k], dim=3)  # [B, nb, heads, 2w, d_head]
                vprev = torch.nn.functional.pad(v, (0, 0, 0, 0, 0, 0, 1, 0))[:, :-1]
                vv = torch.cat([vprev, v], dim=3)
                a = torch.arange(w, device=self.device)
                c = torch.arange(2 * w, device=self.device)
                back = w + a[:, None] - c[None, :]  # query j*w + a, key (j - 1)*w + c: distance [w, 2w]
                blk = torch.arange(nb, device=self.device)
                valid = (back >= 0) & (back < w)
                valid = valid[None, :, :] & ((blk[:, None, None] > 0) | (c[None, None, :] >= w))  # [nb, w, 2w]
                s32 = (q @ kk.transpose(-1, -2)).round().long()  # [B, nb, heads, w, 2w]
                sc = self._requant(s32, p["score_m"][i], p["score_s"][i])
                sc = sc - p["slopes"][i][None, None, :, None, None] * back.clamp_min(0)[None, None, None]
                y = self._attend(sc, valid[None, :, None], lambda e: (e.double() @ vv).round().long())  # [B, nb, h, w, dh]
                y = y.permute(0, 1, 3, 2, 4).reshape(n, t_len, d)
            elif t == CONV:
                a = torch.zeros_like(h)
                for k in range(p["taps"].shape[1]):
                    shift = k * self.dilation[i]
                    if shift < t_len:
                        a[:, shift:] += p["taps"][i, k] * h[:, : t_len - shift]
                y = p["conv_lut"][i][self._clamp8(self._requant(a, p["taps_m"][i], p["taps_s"][i])) + 127]
            else:  # the recurrence is sequential in time: one [B, d] update per position
                z, cc = self._gates(i, h)
                s = torch.zeros_like(h[:, 0])
                y = torch.empty_like(h)
                for pos in range(t_len):
                    s = ((256 - z[:, pos]) * s + z[:, pos] * cc[:, pos] * 256 + 128) >> 8
                    y[:, pos] = self._clamp8((s + 128) >> 8)
            r = self._mlp(r, layer, y)
        return r

    def _intervals(self, r, targets):
        """(C_s, f_s, table sum) for each position's target symbol s: rows of r [N, d], targets [N]."""
        f = self._table(r)
        c = f.cumsum(-1)
        fs = f.gather(1, targets[:, None])[:, 0]
        return c.gather(1, targets[:, None])[:, 0] - fs, fs, c[:, -1]

    def _level_stats(self, r, targets, pred):
        """With a match model: what ``kernels.matched_intervals`` needs of each position's neural table at every
        temperature level l: [N, levels] sum, sum of f_v * gap_v, C_y, f_y, f of the predicted token (pred; -1:
        none, any entry), and [N] the target's capped gap. f <= 2**20, gap < 2**18, vocab < 2**17: < 2**55."""
        g = self._gaps(self._logits(r))
        y, sp = targets[:, None], pred.clamp_min(0)[:, None]
        out = [[] for _ in range(5)]
        for lut in self.luts:
            f = lut[g]
            c = f.cumsum(-1)
            fy = f.gather(1, y)[:, 0]
            for k, v in enumerate((c[:, -1], (f * g).sum(-1), c.gather(1, y)[:, 0] - fy, fy, f.gather(1, sp)[:, 0])):
                out[k].append(v)
        return (*(self.torch.stack(v, 1) for v in out), g.gather(1, y)[:, 0])

    def encode(self, inputs: list[np.ndarray], targets: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """``IntModel.encode`` on the device: words per record and the verify flag, the same bits. With a match
        model the device gives every position's table at each temperature level and the host runs the per-record
        recursion (``kernels.matched_intervals``)."""
        torch, w = self.torch, self.window
        lengths = np.array([len(x) for x in inputs], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        n_tok, levels = int(starts[-1]), self.luts.shape[0]
        tgt = np.concatenate([np.asarray(t, np.int64) for t in targets]) if len(targets) else np.zeros(0, np.int64)
        if self.matched:
            pred, length = np.zeros(n_tok, np.int64), np.zeros(n_tok, np.int64)
            kernels.match_predictions(self.model.match, tgt, starts, pred, length)
            got = [np.zeros((n_tok, levels), np.int64) for _ in range(5)] + [np.zeros(n_tok, np.int64)]
        else:
            got = [np.zeros(n_tok, np.int64) for _ in range(3)]
        order = [int(r) for r in np.argsort(-lengths, kind="stable") if lengths[r] > 0]
        k = 0
        while k < len(order):  # passes of records of similar length (longest first), within the token budget
            t_len = -(-int(lengths[order[k]]) // w) * w
            group = order[k : k + max(1, self.tokens // t_len)]
            k += len(group)
            x, y = np.zeros((len(group), t_len), np.int64), np.zeros((len(group), t_len), np.int64)
            for j, rec in enumerate(group):
                x[j, : lengths[rec]] = inputs[rec]
                y[j, : lengths[rec]] = targets[rec]
            keep = torch.as_tensor(np.arange(t_len)[None, :] < lengths[group][:, None], device=self.device)
            r = self.forward(torch.as_tensor(x, device=self.device))[keep]
            yy = torch.as_tensor(y, device=self.device)[keep]
            rows = max(1, self.tokens // (8 * levels))  # the output layer's [rows, vocab] tables, a slice at a time
            if self.matched:  # (kept is row-major over group records, as the concatenation of their predictions)
                ss = torch.as_tensor(np.concatenate([pred[starts[rec] : starts[rec + 1]] for rec in group]),
                                     device=self.device)
                parts = (self._level_stats(r[a : a + rows], yy[a : a + rows], ss[a : a + rows])
                         for a in range(0, len(r), rows))
            else:
                parts = (self._intervals(r[a : a + rows], yy[a : a + rows]) for a in range(0, len(r), rows))
            here = [torch.cat(z).cpu().numpy() for z in zip(*parts)]
            at = np.concatenate([[0], np.cumsum(lengths[group])])
            for j, rec in enumerate(group):
                for dst, src in zip(got, here):
                    dst[starts[rec] : starts[rec + 1]] = src[at[j] : at[j + 1]]
        if self.matched:
            prefix, freq, total = (np.zeros(n_tok, np.int64) for _ in range(3))
            kernels.matched_intervals(self.model.match, starts, tgt, pred, length, *got, prefix, freq, total)
        else:
            prefix, freq, total = got
        word_starts = np.concatenate([[0], np.cumsum([coder.max_words(n) for n in lengths])]).astype(np.int64)
        words = np.zeros(int(word_starts[-1]), np.uint32)
        lefts, probs = np.zeros(n_tok, np.int64), np.zeros(n_tok, np.int64)
        n_words = coder.code_prefix_sums(prefix, freq, total, tgt, self.vocab, starts, words, word_starts,
                                         lefts, probs, layouts.shortest_seal(self.model.body_layout))
        ok = kernels.verify_records(words, word_starts, n_words, starts, lefts, probs)
        return [words[word_starts[r] : word_starts[r] + n_words[r]] for r in range(len(inputs))], ok

    # -- decode ---------------------------------------------------------------------------------------------------
    def _search(self, f, q):
        """(symbol, C_s, f_s, sum) with cdf(s) <= q < cdf(s + 1) in each table row f [n, vocab] (``coder``'s cdf:
        trunc(C_i * scale) + i), found like ``coder.find_symbol``: first the block of BLOCK symbols, then the symbol
        in it, so only the block sums read the whole table."""
        torch, n, blk = self.torch, self.vocab, kernels.BLOCK
        fp = torch.nn.functional.pad(f, (0, -n % blk)).view(len(f), -1, blk)  # [rows, blocks, BLOCK]
        sums = fp.sum(-1)
        starts = sums.cumsum(-1) - sums  # C at each block's first symbol
        total = starts[:, -1] + sums[:, -1]
        scale = torch.full_like(total, (1 << coder.PRECISION) - n, dtype=torch.float64) / total  # one IEEE division
        # (not float / tensor: torch computes that as a reciprocal times the float, two roundings)
        first = torch.arange(0, fp.shape[1] * blk, blk, device=self.device)
        j = ((starts.double() * scale[:, None]).long() + first <= q[:, None]).sum(-1, keepdim=True) - 1
        fb = fp.gather(1, j[:, :, None].expand(-1, -1, blk))[:, 0]  # the block's frequencies [rows, BLOCK]
        c = starts.gather(1, j) + fb.cumsum(-1) - fb  # C_i across the block
        i = j * blk + torch.arange(blk, device=self.device)
        below = ((c.double() * scale[:, None]).long() + i <= q[:, None]) & (i < n)
        k = (below.sum(-1, keepdim=True) - 1).clamp(0, blk - 1)
        s = (j * blk + k)[:, 0].clamp(max=n - 1)
        return torch.stack([s, c.gather(1, k)[:, 0], fb.gather(1, k)[:, 0], total])

    def _decide(self, lv, q, level=None, pred=None, lb=None):
        """One step's tables from its logits, searched at the quantiles q: [4, n] (symbol, C, f, sum) or, with a
        match model, [7, n] adding the neural sum, sum of f_v * gap_v and the symbol's gap (``kernels.
        match_after_step``). Each row's table is at its record's temperature level, with the boost of its
        predicted token pred (length bucket lb), as ``kernels.neural_table`` and ``mix_match`` build it."""
        if not self.matched:
            return self._search(self._lookup_max(lv, self.p["head_lut"]), q)
        g = self._gaps(lv)
        f = self.luts[level[:, None], g]
        total = f.sum(-1)
        sp = pred.clamp_min(0)[:, None]
        b = self._boost(f.gather(1, sp)[:, 0], total, pred, lb)
        found = self._search(f.scatter_add(1, sp, b[:, None]), q)
        return self.torch.cat([found, self.torch.stack([total, (f * g).sum(-1), g.gather(1, found[0][:, None])[:, 0]])])

    def _stepper(self, state: dict, n_slots: int):
        """fn(tokens, q, fresh[, level, pred, lb]) -> [4 or 7, n_slots] int64 on the host: one step of every slot
        (``_step``), then its tables searched at the quantiles q (``_decide``). On CUDA the step is recorded once as
        a CUDA graph and replayed: a step is ~150 small kernels, and launching them one by one from Python costs
        more than running them. Its inputs are copied into the graph's own tensors, and nothing else writes
        ``state`` meanwhile."""
        torch = self.torch
        every = torch.arange(n_slots, device=self.device)
        n_in, n_out = (6, 7) if self.matched else (3, 4)

        def step(tokens, q, fresh, *match_in):
            return self._decide(self._step(state, tokens, every, True, fresh), q, *match_in)

        if self.device.type != "cuda" or not self.graphs:
            def eager(*arrays):
                return step(*(torch.as_tensor(x, device=self.device) for x in arrays)).cpu().numpy()

            return eager
        ins = [torch.zeros(n_slots, dtype=torch.int64, device=self.device) for _ in range(n_in)]
        host = [torch.zeros(n, dtype=torch.int64).pin_memory() for n in (n_slots,) * n_in + (n_out * n_slots,)]
        kept = {k: v.clone() for k, v in state.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # a warm-up outside the capture (allocations, library handles)
            step(*ins)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = step(*ins).reshape(-1)
        for k, v in kept.items():  # undo the warm-up's step
            state[k].copy_(v)

        def run(*arrays):
            for h, x, a in zip(host, ins, arrays):
                h.numpy()[:] = a
                x.copy_(h, non_blocking=True)
            graph.replay()
            host[-1].copy_(out, non_blocking=True)
            torch.cuda.current_stream().synchronize()
            return host[-1].numpy().reshape(n_out, n_slots)

        return run

    def decode(self, first: np.ndarray, bodies: list[np.ndarray], lengths: np.ndarray, piece_len: np.ndarray,
               max_tokens: np.ndarray | None = None):
        """``IntModel.decode`` on the device: the same tokens and status per record.

        Records take slots longest first (shortest first when host threads help, below); a finished record's slot
        goes to the next one. Every step runs all
        slots (a free slot computes a token nobody reads), so the step has one shape and CUDA replays it as a
        graph. Once no record waits and at most half the slots are busy, the busy ones move to a state half as
        wide (and a new graph): the last, longest records do not pay for thousands of idle slots.

        A step costs the device about the same for 1 slot as for thousands, so a long record is cheap on the host
        and dear on the device. With ``host_threads``, those threads take records from the long end of the queue
        (one at a time, ``IntModel.decode``) while the device fills its slots from the short end, until the queue
        is empty: no split to tune, and the device's last steps are for mid-length records, not the longest."""
        n = len(bodies)
        words, word_starts, lengths, out, out_starts, n_out, status = decode_buffers(bodies, lengths, max_tokens)
        piece_len = np.asarray(piece_len, np.int64)
        ds = np.zeros((n, 4), np.uint64)
        kernels.init_decoders(ds, words, word_starts)
        remaining, tokens = lengths.copy(), np.asarray(first, np.int64).copy()
        queue = deque(int(r) for r in np.argsort(-lengths, kind="stable") if lengths[r] > 0)  # longest first
        take = queue.pop if self.host_threads else queue.popleft  # deque pops are atomic: no lock
        width = min(self.slots, len(queue))
        pool = ThreadPoolExecutor(max(1, self.host_threads), thread_name_prefix="nbmf-host-decode")
        helpers = [pool.submit(self._host_decode, queue, first, bodies, lengths, piece_len, max_tokens, out,
                               out_starts, n_out, status) for _ in range(min(self.host_threads, len(queue)))]
        try:
            self._device_decode(queue, take, width, ds, words, word_starts, piece_len, out, out_starts, n_out,
                                tokens, remaining, status)
        except BaseException:
            queue.clear()  # the host threads stop after their current record
            raise
        finally:
            pool.shutdown(wait=True)
        for h in helpers:
            h.result()  # (re-raises a host thread's error)
        return [out[out_starts[r] : out_starts[r] + n_out[r]] for r in range(n)], status

    def _device_decode(self, queue, take, width, ds, words, word_starts, piece_len, out, out_starts, n_out, tokens,
                       remaining, status):
        torch, m = self.torch, self.model.match
        record = np.full(width, -1, np.int64)  # slot -> record decoding in it
        state = self.new_state(width) if width else None
        run = self._stepper(state, width) if width else None
        ht, ms = match_model.state(m.conf, width)  # the match model's state per slot (the host's part of a step)
        while True:
            fresh = np.zeros(len(record), np.int64)
            for j in np.flatnonzero(record < 0):
                try:
                    record[j] = take()
                except IndexError:  # empty
                    break
                fresh[j] = 1
                if self.matched:
                    match_model.reset(ht, ms, j)
            slots = np.flatnonzero(record >= 0)
            if len(slots) == 0:
                break
            if not queue and len(slots) <= len(record) // 2:  # narrow: busy slots first, then idle ones
                width = 1 << (len(slots) - 1).bit_length()
                keep = np.concatenate([slots, np.flatnonzero(record < 0)])[:width]
                at = torch.as_tensor(keep, device=self.device)
                state = {name: (v[at] if name == "pos" else v[:, at]).clone() for name, v in state.items()}
                record, fresh, ht, ms = record[keep], fresh[keep], ht[keep], ms[keep]
                slots = np.arange(len(slots))
                run = self._stepper(state, width)
            rows = record[slots]
            q = np.empty(len(rows), np.int64)
            kernels.quantiles(ds, rows, q)
            ins = [np.zeros(width, np.int64) for _ in range(6 if self.matched else 3)]  # tokens, q, fresh[, match]
            ins[0][slots], ins[1][slots], ins[2][:] = tokens[rows], q, fresh
            if self.matched:
                lv, pred, lb = (np.zeros(len(rows), np.int64) for _ in range(3))
                kernels.match_before_step(m, ht, ms, slots, rows, out, out_starts, n_out, lv, pred, lb)
                ins[3][slots], ins[4][slots], ins[5][slots] = lv, pred, lb
            got = run(*ins)[:, slots]
            s, c, fs, tot = got[:4]
            if kernels.take_found(rows, q, s, c, fs, tot, self.vocab, ds, words, word_starts, piece_len, out,
                                  out_starts, n_out, tokens, remaining, status):
                raise RuntimeError(f"{self.device} tables disagree with the coder's arithmetic: its floating point "
                                   "is not IEEE; decode on the CPU")
            if self.matched:
                kernels.match_after_step(m, ms, slots, pred, s, got[5], got[4], got[6])
            record[slots[remaining[rows] <= 0]] = -1

    def _host_decode(self, queue, first, bodies, lengths, piece_len, max_tokens, out, out_starts, n_out, status):
        """Decode records from the long end of ``queue`` with the CPU kernel into the shared outputs."""
        while True:
            try:
                r = queue.popleft()
            except IndexError:
                return
            cap = None if max_tokens is None else np.asarray(max_tokens, np.int64)[[r]]
            (tokens,), (st,) = self.model.decode(np.asarray(first, np.int64)[[r]], [bodies[r]], lengths[[r]],
                                                 piece_len, cap)
            out[out_starts[r] : out_starts[r] + len(tokens)] = tokens
            n_out[r], status[r] = len(tokens), st
