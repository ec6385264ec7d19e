"""Exact int8 matrix products for the integer runtime: ``acc[b, o] = sum_k x[b, k] * w[o, k]`` in int32.

One weight layout, one kernel, two instruction sets chosen when numba compiles it for the host:
- AVX-512 VNNI (``vpdpbusd``: 64 u8 x s8 multiply-accumulates per instruction) where the CPU has it;
- otherwise the same arithmetic as plain LLVM vector IR, which LLVM lowers to what the CPU has.
Both produce the same integers: each is exact integer arithmetic, so order and width change nothing.

Invariant (stated once, relied on by every caller): activations and weights are int8 in [-127, 127].
``vpdpbusd`` multiplies *unsigned* bytes by signed ones, so activations are stored offset by +128
(u8 in [1, 255]) and the offset is taken back through a per-output bias ``-128 * sum_k w[o, k]`` that the
accumulator starts from. Bounds: |(x + 128) * w| <= 255 * 127 = 32,385 and the bias is <= 128 * 127 * K,
so for K <= 16,384 every partial sum stays below 2**31 (the runtime's widest K is mlp_mult * d_model).

Weights are packed once per matrix (``pack``): outputs padded to blocks of 64 (four 16-lane vectors),
inputs padded to groups of 4 bytes; within a block, for each group of 4 inputs, 64 outputs x 4 bytes lie
contiguous: the 256 bytes one step of the micro-kernel reads. Padding is zero weight, so it adds nothing.
Set NBMF_GEMM=portable (with a fresh NUMBA_CACHE_DIR) to build the portable form of every runtime kernel on a
host that has VNNI (and VBMI, nbmf.runtime.lookup).
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

OB = 64  # outputs per block: four vectors of 16 int32 lanes
KG = 4  # inputs per group: the 4 bytes one int32 lane of vpdpbusd sums
NB_MAX = 4  # rows (records or positions) per micro-kernel call: 16 accumulators + 4 weight vectors in zmm


def host_has(*features: str) -> bool:
    """True when the host has every one of these LLVM CPU features and NBMF_GEMM does not ask for the portable
    form (the runtime's kernels then emit them: VNNI here, VBMI in nbmf.runtime.lookup)."""
    if os.environ.get("NBMF_GEMM", "").lower() == "portable":
        return False
    host = llvm_binding.get_host_cpu_features()
    return all(bool(host.get(f)) for f in features)


def host_has_vnni() -> bool:
    """True when numba will emit AVX-512 VNNI for this host (and NBMF_GEMM does not ask for the portable form)."""
    return host_has("avx512vnni", "avx512bw")


class Packed(NamedTuple):
    """One int8 weight matrix in the kernel's layout (see the module docstring)."""

    w: np.ndarray  # int8 [n_blocks * k_groups * 256]
    bias: np.ndarray  # int32 [n_blocks * 64]: -128 * row sums (the activation offset), 0 in padding


def padded(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pack(w: np.ndarray, width: int = OB) -> Packed:
    """[n_out, n_in] int8 in [-127, 127] -> Packed, in blocks of ``width`` outputs (OB; or narrow_width for
    ``gemm2_narrow``)."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"pack takes a 2-d weight matrix, got shape {w.shape}")
    if w.size and (w.min() < -127 or w.max() > 127):
        raise ValueError("weights must lie in [-127, 127] (the kernel's offset trick relies on it)")
    n_out, n_in = w.shape
    o_pad, k_pad = padded(max(n_out, 1), width), padded(max(n_in, 1), KG)
    full = np.zeros((o_pad, k_pad), np.int8)
    full[:n_out, :n_in] = w
    # [block, out-in-block, group, byte] -> [block, group, out-in-block, byte]
    blocks = full.reshape(o_pad // width, width, k_pad // KG, KG).transpose(0, 2, 1, 3)
    bias = (-128 * full.astype(np.int64).sum(axis=1)).astype(np.int32)
    return Packed(np.ascontiguousarray(blocks).reshape(-1), bias)


# -- the micro-kernel: LLVM IR ------------------------------------------------------------------------------
_V16 = ir.VectorType(ir.IntType(32), 16)
_V64B = ir.VectorType(ir.IntType(8), 64)
_V64I = ir.VectorType(ir.IntType(32), 64)


def _dot4(builder, vnni: bool, acc, xv, wv):
    """acc + per-lane sum of 4 (u8 x) * (s8 w) byte products: vpdpbusd, or the same in generic IR."""
    if vnni:
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16, [_V16, _V16, _V16]),
                                            "llvm.x86.avx512.vpdpbusd.512")
        return builder.call(fn, [acc, xv, wv])
    prod = builder.mul(builder.zext(builder.bitcast(xv, _V64B), _V64I),
                       builder.sext(builder.bitcast(wv, _V64B), _V64I))  # |prod| <= 255 * 128: exact in i32
    for t in range(KG):
        lane = builder.shuffle_vector(prod, ir.Constant(_V64I, None),
                                      ir.Constant(ir.VectorType(ir.IntType(32), 16), [4 * i + t for i in range(16)]))
        acc = builder.add(acc, lane)
    return acc


def _micro_kernel(nb: int, split: int, n_vec: int = OB // 16):
    """acc[nb rows, 16 * n_vec outputs] = bias + sum over k groups (see gemm); nb, n_vec fixed at compile time.
    n_vec < 4 reads a narrow block (``narrow_width``): per group, 16 * n_vec outputs x 4 bytes.

    Each vpdpbusd waits for the previous one into the same accumulator, so one chain of k_groups steps is
    latency-bound when there are few chains (4 per row). With ``split`` > 1, groups k, k+1, ... go into
    ``split`` independent partial sums that are added at the end (integer addition: the same result), so
    few rows still keep the vector units busy. Groups past the last full ``split`` go into the first set.
    """

    @intrinsic
    def mk(typingctx, x, x_off, ldx, w, w_off, k_groups, acc, acc_off, ldacc, bias, bias_off):
        sig = types.void(x, x_off, ldx, w, w_off, k_groups, acc, acc_off, ldacc, bias, bias_off)

        def codegen(context, builder, signature, args):
            vnni = host_has_vnni()
            i64 = ir.IntType(64)
            tys = signature.args
            x_a, x_off, ldx, w_a, w_off, k_groups, acc_a, acc_off, ldacc, bias_a, bias_off = args
            cast = [context.cast(builder, args[i], tys[i], types.int64) for i in (1, 2, 4, 5, 7, 8, 10)]
            x_off, ldx, w_off, k_groups, acc_off, ldacc, bias_off = cast
            x_p = context.make_array(tys[0])(context, builder, x_a).data
            w_p = context.make_array(tys[3])(context, builder, w_a).data
            acc_p = context.make_array(tys[6])(context, builder, acc_a).data
            bias_p = context.make_array(tys[9])(context, builder, bias_a).data
            v16p = _V16.as_pointer()
            i32p = ir.IntType(32).as_pointer()
            zero16 = ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16)
            bias_v = [builder.load(builder.bitcast(builder.gep(bias_p, [builder.add(bias_off, i64(16 * j))]), v16p),
                                   align=4) for j in range(n_vec)]
            zero_v = ir.Constant(_V16, [0] * 16)

            def step(k, accs):
                """accs[b][j] + group k of rows b, output vectors j."""
                w_row = builder.gep(w_p, [builder.add(w_off, builder.mul(k, i64(KG * 16 * n_vec)))])
                wv = [builder.load(builder.bitcast(builder.gep(w_row, [i64(64 * j)]), v16p), align=1)
                      for j in range(n_vec)]
                out = []
                for b in range(nb):
                    xa = builder.gep(x_p, [builder.add(builder.add(x_off, builder.mul(i64(b), ldx)), builder.mul(k, i64(KG)))])
                    xw = builder.load(builder.bitcast(xa, i32p), align=1)
                    xv = builder.shuffle_vector(builder.insert_element(ir.Constant(_V16, None), xw, i64(0)),
                                                ir.Constant(_V16, None), zero16)
                    out.append([_dot4(builder, vnni, accs[b][j], xv, wv[j]) for j in range(n_vec)])
                return out

            def loop(name, k_start, k_stop, stride, init, guard=True):
                """for k in range(k_start, k_stop - stride + 1, stride): init[s] += step(k + s); -> (sets, k_end).
                guard=False: the caller knows the body runs at least once."""
                pre = builder.basic_block
                body = builder.append_basic_block(name)
                done = builder.append_basic_block(name + "_done")
                if guard:
                    builder.cbranch(builder.icmp_signed("<=", builder.add(k_start, i64(stride)), k_stop), body, done)
                else:
                    builder.branch(body)
                builder.position_at_end(body)
                k = builder.phi(i64)
                sets = [[[builder.phi(_V16) for _ in range(n_vec)] for _ in range(nb)] for _ in range(stride)]
                new = [step(builder.add(k, i64(s)), sets[s]) for s in range(stride)]
                k_next = builder.add(k, i64(stride))
                builder.cbranch(builder.icmp_signed("<=", builder.add(k_next, i64(stride)), k_stop), body, done)
                k.add_incoming(k_start, pre)
                k.add_incoming(k_next, body)
                builder.position_at_end(done)
                k_end = builder.phi(i64)
                if guard:
                    k_end.add_incoming(k_start, pre)
                k_end.add_incoming(k_next, body)
                out = []
                for s in range(stride):
                    out_s = []
                    for b in range(nb):
                        row = []
                        for j in range(n_vec):
                            sets[s][b][j].add_incoming(init[s][b][j], pre)
                            sets[s][b][j].add_incoming(new[s][b][j], body)
                            phi = builder.phi(_V16)
                            if guard:
                                phi.add_incoming(init[s][b][j], pre)
                            phi.add_incoming(new[s][b][j], body)
                            row.append(phi)
                        out_s.append(row)
                    out.append(out_s)
                return out, k_end

            first = [[bias_v[j] for j in range(n_vec)] for _ in range(nb)]
            k_end = i64(0)
            if split > 1:
                rest = [[[zero_v] * n_vec for _ in range(nb)] for _ in range(split - 1)]
                sets, k_end = loop("mk_split", i64(0), k_groups, split, [first] + rest)
                first = [[sets[0][b][j] for j in range(n_vec)] for b in range(nb)]
                for s in range(1, split):  # |sum| < 2**31 as for one chain: the same terms, grouped
                    first = [[builder.add(first[b][j], sets[s][b][j]) for j in range(n_vec)] for b in range(nb)]
            sets, _ = loop("mk_tail" if split > 1 else "mk_loop", k_end, k_groups, 1, [first], guard=split > 1)
            for b in range(nb):
                row = builder.add(acc_off, builder.mul(i64(b), ldacc))
                for j in range(n_vec):
                    dst = builder.bitcast(builder.gep(acc_p, [builder.add(row, i64(16 * j))]), v16p)
                    builder.store(sets[0][b][j], dst, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return mk


# Independent partial sums per row count. Split where it measured faster: two rows (the attention value
# product, 0.25 -> 0.17 us per row and layer). One row is bound by streaming the weights, 3-4 rows already
# have 12-16 chains.
SPLIT = {1: 1, 2: 2, 3: 1, 4: 1}
_mk1, _mk2, _mk3, _mk4 = (_micro_kernel(n, SPLIT[n]) for n in range(1, NB_MAX + 1))
_mk2w16, _mk2w32, _mk2w48 = (_micro_kernel(2, 4, v) for v in (1, 2, 3))
_mk2n = _micro_kernel(2, 4)
_mk1s = _micro_kernel(1, 4)
SHORT = 16


@njit(cache=True)
def narrow_width(n_out):
    """Block width for a matrix of n_out outputs packed narrow: n_out rounded up to 16 lanes, at most OB.
    (Attention values have d_head outputs: padding them to 64 would double the cache the decoder streams.)"""
    return min(OB, -(-max(n_out, 1) // 16) * 16)


@njit(nogil=True, cache=True)
def gemm2_narrow(x, ldx, w, w_off, k_groups, n_blocks, width, bias, acc, ldacc):
    """Two rows of x times a matrix packed in blocks of ``width`` outputs (narrow_width; the packed layout of
    the module docstring with ``width`` in place of 64): acc[:2, :n_blocks * width], exact int32."""
    for ob in range(n_blocks):
        wo = w_off + ob * k_groups * KG * width
        if width == 16:
            _mk2w16(x, 0, ldx, w, wo, k_groups, acc, ob * width, ldacc, bias, ob * width)
        elif width == 32:
            _mk2w32(x, 0, ldx, w, wo, k_groups, acc, ob * width, ldacc, bias, ob * width)
        elif width == 48:
            _mk2w48(x, 0, ldx, w, wo, k_groups, acc, ob * width, ldacc, bias, ob * width)
        else:
            _mk2n(x, 0, ldx, w, wo, k_groups, acc, ob * width, ldacc, bias, ob * width)


@njit(nogil=True, cache=True)
def gemm_at(x, x_off, ldx, n_rows, w, w_off, k_groups, n_blocks, bias, bias_off, acc, acc_off, ldacc):
    """``gemm`` on offsets into C-contiguous buffers of any shape (offsets in elements): one matrix of a
    stacked cache, say, without taking a view of it (a view costs two atomic reference counts per call)."""
    for ob in range(n_blocks):
        wo = w_off + ob * k_groups * KG * OB
        bo = bias_off + ob * OB
        b = 0
        while b + 4 <= n_rows:
            _mk4(x, x_off + b * ldx, ldx, w, wo, k_groups, acc, acc_off + b * ldacc + ob * OB, ldacc, bias, bo)
            b += 4
        rest = n_rows - b
        xo, ao = x_off + b * ldx, acc_off + b * ldacc + ob * OB
        if rest == 3:
            _mk3(x, xo, ldx, w, wo, k_groups, acc, ao, ldacc, bias, bo)
        elif rest == 2:
            _mk2(x, xo, ldx, w, wo, k_groups, acc, ao, ldacc, bias, bo)
        elif rest == 1:
            if k_groups <= SHORT:
                _mk1s(x, xo, ldx, w, wo, k_groups, acc, ao, ldacc, bias, bo)
            else:
                _mk1(x, xo, ldx, w, wo, k_groups, acc, ao, ldacc, bias, bo)


@njit(nogil=True, cache=True)
def gemm(x, n_rows, w, bias, acc):
    """acc[:n_rows, :o_pad] = x[:n_rows] times one packed matrix (w, bias): exact int32.

    x: uint8 [rows >= n_rows, >= k_pad], activations offset by +128; acc: int32 [rows >= n_rows, >= o_pad].
    Both are row-major buffers that may be wider than this matrix (one scratch serves every layer);
    columns past k_pad are not read and columns past o_pad are not written.
    """
    n_blocks = bias.shape[0] // OB
    k_groups = w.shape[0] // (n_blocks * KG * OB)
    gemm_at(x, 0, x.shape[1], n_rows, w, 0, k_groups, n_blocks, bias, 0, acc, 0, acc.shape[1])


if config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1 runs the runtime as plain Python: the same product in numpy
    def gemm_at(x, x_off, ldx, n_rows, w, w_off, k_groups, n_blocks, bias, bias_off, acc, acc_off, ldacc):  # noqa: F811
        k, o = k_groups * KG, n_blocks * OB
        if n_rows == 0:
            return
        wf = w.reshape(-1)[w_off : w_off + o * k].reshape(n_blocks, k_groups, OB, KG)
        full = wf.transpose(0, 2, 1, 3).reshape(o, k).astype(np.int64)
        xs = np.stack([x.reshape(-1)[x_off + b * ldx : x_off + b * ldx + k] for b in range(n_rows)]).astype(np.int64)
        out = xs @ full.T + bias.reshape(-1)[bias_off : bias_off + o]
        flat = acc.reshape(-1)
        for b in range(n_rows):
            flat[acc_off + b * ldacc : acc_off + b * ldacc + o] = out[b]

    def gemm2_narrow(x, ldx, w, w_off, k_groups, n_blocks, width, bias, acc, ldacc):  # noqa: F811
        k = k_groups * KG
        for ob in range(n_blocks):
            wo = w_off + ob * k_groups * KG * width
            full = w.reshape(-1)[wo : wo + width * k].reshape(k_groups, width, KG).transpose(1, 0, 2).reshape(width, k)
            out = x[:2, :k].astype(np.int64) @ full.astype(np.int64).T + bias[ob * width : (ob + 1) * width]
            acc[:2, ob * width : (ob + 1) * width] = out
