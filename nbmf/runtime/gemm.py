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
Set NBMF_GEMM=portable (with a fresh NUMBA_CACHE_DIR) to build the portable form on a VNNI host.
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


def host_has_vnni() -> bool:
    """True when numba will emit AVX-512 VNNI for this host (and NBMF_GEMM does not ask for the portable form)."""
    if os.environ.get("NBMF_GEMM", "").lower() == "portable":
        return False
    features = llvm_binding.get_host_cpu_features()
    return bool(features.get("avx512vnni")) and bool(features.get("avx512bw"))


class Packed(NamedTuple):
    """One int8 weight matrix in the kernel's layout (see the module docstring)."""

    w: np.ndarray  # int8 [n_blocks * k_groups * 256]
    bias: np.ndarray  # int32 [n_blocks * 64]: -128 * row sums (the activation offset), 0 in padding


def padded(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pack(w: np.ndarray) -> Packed:
    """[n_out, n_in] int8 in [-127, 127] -> Packed."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"pack takes a 2-d weight matrix, got shape {w.shape}")
    if w.size and (w.min() < -127 or w.max() > 127):
        raise ValueError("weights must lie in [-127, 127] (the kernel's offset trick relies on it)")
    n_out, n_in = w.shape
    o_pad, k_pad = padded(max(n_out, 1), OB), padded(max(n_in, 1), KG)
    full = np.zeros((o_pad, k_pad), np.int8)
    full[:n_out, :n_in] = w
    # [block, out-in-block, group, byte] -> [block, group, out-in-block, byte]
    blocks = full.reshape(o_pad // OB, OB, k_pad // KG, KG).transpose(0, 2, 1, 3)
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


def _micro_kernel(nb: int):
    """acc[nb rows, 64 outputs] = bias + sum over k groups (see gemm); nb is fixed at compile time."""

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
            bias_v = [builder.load(builder.bitcast(builder.gep(bias_p, [builder.add(bias_off, i64(16 * j))]), v16p),
                                   align=4) for j in range(4)]
            pre = builder.basic_block
            loop = builder.append_basic_block("mk_loop")
            done = builder.append_basic_block("mk_done")
            builder.branch(loop)
            builder.position_at_end(loop)
            k = builder.phi(i64)
            accs = [[builder.phi(_V16) for _ in range(4)] for _ in range(nb)]
            w_row = builder.gep(w_p, [builder.add(w_off, builder.mul(k, i64(KG * OB)))])
            wv = [builder.load(builder.bitcast(builder.gep(w_row, [i64(64 * j)]), v16p), align=1) for j in range(4)]
            new = []
            zero16 = ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16)
            for b in range(nb):
                xa = builder.gep(x_p, [builder.add(builder.add(x_off, builder.mul(i64(b), ldx)), builder.mul(k, i64(KG)))])
                xw = builder.load(builder.bitcast(xa, i32p), align=1)
                xv = builder.shuffle_vector(builder.insert_element(ir.Constant(_V16, None), xw, i64(0)),
                                            ir.Constant(_V16, None), zero16)
                new.append([_dot4(builder, vnni, accs[b][j], xv, wv[j]) for j in range(4)])
            k_next = builder.add(k, i64(1))
            builder.cbranch(builder.icmp_signed("<", k_next, k_groups), loop, done)
            k.add_incoming(i64(0), pre)
            k.add_incoming(k_next, loop)
            for b in range(nb):
                for j in range(4):
                    accs[b][j].add_incoming(bias_v[j], pre)
                    accs[b][j].add_incoming(new[b][j], loop)
            builder.position_at_end(done)
            for b in range(nb):
                row = builder.add(acc_off, builder.mul(i64(b), ldacc))
                for j in range(4):
                    dst = builder.bitcast(builder.gep(acc_p, [builder.add(row, i64(16 * j))]), v16p)
                    builder.store(new[b][j], dst, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return mk


_mk1, _mk2, _mk3, _mk4 = (_micro_kernel(n) for n in range(1, NB_MAX + 1))


@njit(nogil=True, cache=True)
def gemm(x, n_rows, w, bias, acc):
    """acc[:n_rows, :o_pad] = x[:n_rows] times one packed matrix (w, bias): exact int32.

    x: uint8 [rows >= n_rows, >= k_pad], activations offset by +128; acc: int32 [rows >= n_rows, >= o_pad].
    Both are row-major buffers that may be wider than this matrix (one scratch serves every layer);
    columns past k_pad are not read and columns past o_pad are not written.
    """
    ldx = x.shape[1]
    ldacc = acc.shape[1]
    n_blocks = bias.shape[0] // OB
    k_groups = w.shape[0] // (n_blocks * KG * OB)
    for ob in range(n_blocks):
        w_off = ob * k_groups * KG * OB
        b = 0
        while b + 4 <= n_rows:
            _mk4(x, b * ldx, ldx, w, w_off, k_groups, acc, b * ldacc + ob * OB, ldacc, bias, ob * OB)
            b += 4
        rest = n_rows - b
        if rest == 3:
            _mk3(x, b * ldx, ldx, w, w_off, k_groups, acc, b * ldacc + ob * OB, ldacc, bias, ob * OB)
        elif rest == 2:
            _mk2(x, b * ldx, ldx, w, w_off, k_groups, acc, b * ldacc + ob * OB, ldacc, bias, ob * OB)
        elif rest == 1:
            _mk1(x, b * ldx, ldx, w, w_off, k_groups, acc, b * ldacc + ob * OB, ldacc, bias, ob * OB)


if config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1 runs the runtime as plain Python: the same product in numpy
    def gemm(x, n_rows, w, bias, acc):  # noqa: F811
        n_blocks = bias.shape[0] // OB
        k_groups = w.shape[0] // (n_blocks * KG * OB)
        full = w.reshape(n_blocks, k_groups, OB, KG).transpose(0, 2, 1, 3).reshape(n_blocks * OB, k_groups * KG)
        xs = x[:n_rows, : k_groups * KG].astype(np.int64)
        acc[:n_rows, : n_blocks * OB] = xs @ full.astype(np.int64).T + bias
