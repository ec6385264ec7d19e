"""The integer runtime on torch devices (GPU clusters): same integers as nbmf.runtime.kernels.

Matrix products run as float64 matmuls of small integers, which are exact on every device (int8 x
int8 products summed over at most a few thousand terms stay far below 2**53), so cuBLAS, any
summation order and any batch give the kernel's integers. Everything else is int64 tensor arithmetic.
Only for hosts that have torch; the codec itself decodes with numpy + numba.
"""
from __future__ import annotations

import numpy as np

from nbmf.runtime.intmodel import IntModel

ATTN, CONV, RECURRENT = 0, 1, 2


class TorchIntModel:
    """Batched integer stepping on ``device``: ``step(tokens, slots) -> frequencies`` like IntModel."""

    def __init__(self, model: IntModel, device: str = "cpu"):
        import torch

        self.torch, self.device, self.cfg = torch, torch.device(device), model.cfg
        t = {k: torch.from_numpy(np.asarray(v).astype(np.int64)).to(self.device) for k, v in model.params.items()}
        self.p = t
        self.f64 = {k: t[k].double() for k in ("wo", "w1", "w2", "qkv", "zc", "wh")}
        self.model = model

    def new_state(self, batch: int) -> dict:
        m, d, w, torch = self.model, self.cfg.d_model, self.cfg.context, self.torch
        shapes = {"kcache": (m.n_attn, batch, d, w), "vcache": (m.n_attn, batch, d, w), "rstate": (m.n_rec, batch, d),
                  "chist": (m.n_conv, batch, m.history, d), "pos": (batch,)}
        return {k: torch.zeros(v, dtype=torch.int64, device=self.device) for k, v in shapes.items()}

    def _requant(self, acc, m, s):
        return (acc * m + (1 << (s - 1))) >> s

    def _clamp8(self, x):
        return x.clamp(-127, 127)

    def _matvec(self, w64, x):  # [O, I] x [B, I] -> [B, O], exact
        return (x.double() @ w64.T).round().long()

    def _norm(self, r):
        torch = self.torch
        ss = (r * r).sum(-1)
        isq = torch.sqrt(ss.double()).long()
        isq = isq - (isq * isq > ss).long()
        isq = isq + ((isq + 1) * (isq + 1) <= ss).long()
        inv = (int(self.p["norm_k"]) << 32) // (isq.clamp_min(1) * 256)
        out = self._clamp8((r * inv[:, None] + (1 << 31)) >> 32)
        return torch.where((ss == 0)[:, None], torch.zeros_like(out), out)

    def step(self, state: dict, tokens, slots):
        """One token for each record ``slots[j]`` (distinct slots); frequencies [len(tokens), vocab] int64."""
        torch, p = self.torch, self.p
        tokens = torch.as_tensor(np.asarray(tokens), device=self.device).long()
        b = torch.as_tensor(np.asarray(slots), device=self.device).long()
        d = self.cfg.d_model
        pos = state["pos"][b]
        r = p["emb"][tokens].clone()
        for layer in range(len(p["mixer_type"])):
            h = self._norm(r)
            t, i = int(p["mixer_type"][layer]), int(p["mixer_idx"][layer])
            if t == ATTN:
                acc = self._matvec(self.f64["qkv"][i], h)
                qkv = self._clamp8(self._requant(acc, p["qkv_m"][i], p["qkv_s"][i]))
                q, k, v = qkv[:, :d], qkv[:, d : 2 * d], qkv[:, 2 * d :]
                window = state["kcache"].shape[3]
                ring = pos % window
                state["kcache"][i, b, :, ring] = k
                state["vcache"][i, b, :, ring] = v
                kc, vc = state["kcache"][i, b], state["vcache"][i, b]  # [n, d, W]
                n_heads = p["slopes"].shape[1]
                dh = d // n_heads
                w = torch.arange(window, device=self.device)
                valid = w[None, :] <= pos[:, None]  # slots filled so far ([n, W]); all once pos >= W - 1
                back = (pos[:, None] - w[None, :]) % window
                qh = q.view(-1, n_heads, dh).double()
                kh = kc.view(-1, n_heads, dh, window).double()
                s32 = torch.einsum("nhc,nhcw->nhw", qh, kh).round().long()
                sc = self._requant(s32, p["score_m"][i], p["score_s"][i]) - p["slopes"][i][None, :, None] * back[:, None, :]
                sc = sc.masked_fill(~valid[:, None, :], -(1 << 62))
                best = sc.max(-1, keepdim=True).values
                idx = (best - sc).clamp(max=p["attn_lut"].shape[0] - 1)
                e = p["attn_lut"][idx].masked_fill(~valid[:, None, :], 0)
                total = e.sum(-1)  # [n, h]
                vh = vc.view(-1, n_heads, dh, window).double()
                m = torch.einsum("nhw,nhcw->nhc", e.double(), vh).round().long()
                y = self._clamp8(torch.div(2 * m + total[..., None], 2 * total[..., None], rounding_mode="floor"))
                y = y.reshape(-1, d)
            elif t == CONV:
                hist = state["chist"].shape[2]
                state["chist"][i, b, pos % hist] = h
                a = torch.zeros_like(h)
                for k in range(p["taps"].shape[1]):
                    q = pos - k * int(p["dilation"][i])
                    ok = (q >= 0).long()[:, None]
                    a = a + ok * p["taps"][i, k][None, :] * state["chist"][i, b, q.clamp_min(0) % hist]
                y = p["conv_lut"][i][self._clamp8(self._requant(a, p["taps_m"][i], p["taps_s"][i])) + 127]
            else:
                acc = self._matvec(self.f64["zc"][i], h)
                z = p["sig_lut"][i][self._clamp8(self._requant(acc[:, :d], p["zc_m"][i, :d], p["zc_s"][i, :d])) + 127]
                cc = self._clamp8(self._requant(acc[:, d:], p["zc_m"][i, d:], p["zc_s"][i, d:]))
                s = ((256 - z) * state["rstate"][i, b] + z * cc * 256 + 128) >> 8
                state["rstate"][i, b] = s
                y = self._clamp8((s + 128) >> 8)
            r = r + self._requant(self._matvec(self.f64["wo"][layer], y), p["wo_m"][layer], p["wo_s"][layer])
            h = self._norm(r)
            a = self._clamp8(self._requant(self._matvec(self.f64["w1"][layer], h), p["w1_m"][layer], p["w1_s"][layer]))
            g = p["act_lut"][layer][a + 127]
            r = r + self._requant(self._matvec(self.f64["w2"][layer], g), p["w2_m"][layer], p["w2_s"][layer])
        h = self._norm(r)
        lv = self._requant(self._matvec(self.f64["wh"], h), p["wh_m"], p["wh_s"])
        idx = (lv.max(-1, keepdim=True).values - lv).clamp(max=p["head_lut"].shape[0] - 1)
        state["pos"][b] = pos + 1
        return p["head_lut"][idx]

    def frequencies(self, sequence) -> np.ndarray:
        state = self.new_state(1)
        rows = [self.step(state, sequence[t : t + 1], [0]) for t in range(len(sequence))]
        return self.torch.cat(rows).cpu().numpy()
