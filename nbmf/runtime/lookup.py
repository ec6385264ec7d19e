"""Table lookups: ``lut[min(best - v, last)]`` sixteen values at a time, and a byte table 64 bytes at a time.

The runtime's exponentials (softmax weights, the head's frequencies) are integer lookup tables indexed by
a value's distance below the row's maximum. LLVM's cost model keeps such loops scalar on some CPUs (AMD
Zen among them), where a vector gather is still faster: measured here, the head's 2,048-entry table
takes 0.61 us with ``llvm.masked.gather`` against 0.89 us for the scalar loop. These intrinsics emit the
gather directly; LLVM lowers it to what the host has (a hardware gather, or scalar loads), so the result
is the same integers everywhere.

A table of 256 bytes (the GELU on the int8 grid) needs no gather: with AVX-512 VBMI two ``vpermi2b`` look up 64
bytes at once in the table's halves (the index's top bit picks the half), 5x faster than a gather or scalar
loads here; without VBMI (or with NBMF_GEMM=portable) the same lookup is plain IR, one byte at a time.
With NUMBA_DISABLE_JIT=1 they are plain numpy.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import config, types
from numba.core import cgutils
from numba.extending import intrinsic

from nbmf.runtime.gemm import host_has

LANES = 16
_I64 = ir.IntType(64)
_V64 = ir.VectorType(_I64, LANES)
_V32 = ir.VectorType(ir.IntType(32), LANES)
_V8 = ir.VectorType(ir.IntType(8), LANES)
_MASK = ir.VectorType(ir.IntType(1), LANES)


def _splat(builder, x, vt):
    one = builder.insert_element(ir.Constant(vt, None), x, ir.IntType(32)(0))
    return builder.shuffle_vector(one, ir.Constant(vt, None), ir.Constant(_V32, [0] * LANES))


def _gathered(context, builder, tys, args):
    """(lut, vals, off, best, last) -> (<16 x i32> lut[min(best - vals[off + i], last)], vals pointer at off,
    <16 x i64> the indices min(best - vals[off + i], last))."""
    lut_a, vals_a, off, best, last = args[:5]
    off, best, last = (context.cast(builder, args[i], tys[i], types.int64) for i in (2, 3, 4))
    lut_p = context.make_array(tys[0])(context, builder, lut_a).data
    vals_p = context.make_array(tys[1])(context, builder, vals_a).data
    at = builder.bitcast(builder.gep(vals_p, [off]), _V64.as_pointer())
    gap = builder.sub(_splat(builder, best, _V64), builder.load(at, align=8))
    last_v = _splat(builder, last, _V64)
    idx = builder.select(builder.icmp_unsigned("<", gap, last_v), gap, last_v)  # as np.uint64 min: 0 <= idx <= last
    addr = builder.add(_splat(builder, builder.ptrtoint(lut_p, _I64), _V64), builder.shl(idx, _splat(builder, _I64(2), _V64)))
    ptrs_t = ir.VectorType(ir.PointerType(), LANES)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V32, [ptrs_t, ir.IntType(32), _MASK, _V32]),
                                        "llvm.masked.gather.v16i32.v16p0")
    got = builder.call(fn, [builder.inttoptr(addr, ptrs_t), ir.IntType(32)(4), ir.Constant(_MASK, [1] * LANES),
                            ir.Constant(_V32, None)])
    return got, at, idx


def _typed(lut, vals, out=None) -> bool:
    """The layouts the IR assumes: an int32 table, int64 values, uint8 output, all C-contiguous."""
    ok = all(isinstance(a, types.Array) and a.layout == "C" for a in (lut, vals) + ((out,) if out else ()))
    return ok and lut.dtype == types.int32 and vals.dtype == types.int64 and (out is None or out.dtype == types.uint8)


def _sum(builder, v):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [_V64]), "llvm.vector.reduce.add.v16i64")
    return builder.call(fn, [v])


@intrinsic
def lookup16(typingctx, lut, vals, off, best, last):
    """vals[off:off+16] = lut[min(best - vals, last)] (int32 lut, int64 vals, in place); returns their sum.
    The caller ensures best >= every value (a row's maximum), so the gap is the unsigned distance."""
    if not _typed(lut, vals):
        return None
    sig = types.int64(lut, vals, off, best, last)

    def codegen(context, builder, signature, args):
        got, at, _ = _gathered(context, builder, signature.args, args)
        wide = builder.sext(got, _V64)
        builder.store(wide, at, align=8)
        return _sum(builder, wide)

    return sig, codegen


@intrinsic
def lookup16_gaps(typingctx, lut, vals, off, best, last):
    """``lookup16`` that also returns the sum of f * min(best - v, last) over the 16 (a tempered table's gap sum,
    nbmf.runtime.match.temper): (sum f, sum f * gap). The caller bounds them: f * gap < 2**20 * 2**18."""
    if not _typed(lut, vals):
        return None
    sig = types.UniTuple(types.int64, 2)(lut, vals, off, best, last)

    def codegen(context, builder, signature, args):
        got, at, idx = _gathered(context, builder, signature.args, args)
        wide = builder.sext(got, _V64)
        builder.store(wide, at, align=8)
        return context.make_tuple(builder, signature.return_type,
                                  [_sum(builder, wide), _sum(builder, builder.mul(wide, idx))])

    return sig, codegen


@intrinsic
def lookup16_bytes(typingctx, lut, vals, off, best, last, out, lo_off, hi_off):
    """e = lut[min(best - vals[off + i], last)] < 2**16 -> bytes e & 255 at out's flat offset lo_off + i and
    e >> 8 at hi_off + i (out uint8, C-contiguous); returns the sum of e."""
    if not _typed(lut, vals, out):
        return None
    sig = types.int64(lut, vals, off, best, last, out, lo_off, hi_off)

    def codegen(context, builder, signature, args):
        tys = signature.args
        got, _, _ = _gathered(context, builder, tys, args)
        dst = context.make_array(tys[5])(context, builder, args[5]).data
        for i, shift in ((6, 0), (7, 8)):
            at = context.cast(builder, args[i], tys[i], types.int64)
            byte = builder.trunc(builder.lshr(got, _splat(builder, ir.IntType(32)(shift), _V32)), _V8)
            builder.store(byte, builder.bitcast(builder.gep(dst, [at]), _V8.as_pointer()), align=1)
        return _sum(builder, builder.zext(got, _V64))

    return sig, codegen


BYTES = 64  # bytes per lookup64_bytes
_VB = ir.VectorType(ir.IntType(8), BYTES)


@intrinsic
def lookup64_bytes(typingctx, table, idx, off, out, out_off):
    """out[out_off + i] = table[idx[off + i]] for i < 64: table uint8 [256], idx and out uint8, C-contiguous
    (offsets flat, in elements). Every byte indexes the table, so no index is out of range."""
    arrays = (table, idx, out)
    if not all(isinstance(a, types.Array) and a.layout == "C" and a.dtype == types.uint8 for a in arrays):
        return None
    sig = types.void(table, idx, off, out, out_off)

    def codegen(context, builder, signature, args):
        tys = signature.args
        t_p, i_p, o_p = (context.make_array(tys[k])(context, builder, args[k]).data for k in (0, 1, 3))
        off, out_off = (context.cast(builder, args[k], tys[k], types.int64) for k in (2, 4))
        vp = _VB.as_pointer()
        iv = builder.load(builder.bitcast(builder.gep(i_p, [off]), vp), align=1)
        if host_has("avx512vbmi", "avx512bw"):
            quarter = [builder.load(builder.bitcast(builder.gep(t_p, [_I64(BYTES * q)]), vp), align=1) for q in range(4)]
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VB, [_VB, _VB, _VB]),
                                                "llvm.x86.avx512.vpermi2var.qi.512")
            low = builder.call(fn, [quarter[0], iv, quarter[1]])  # table[i & 127] for i < 128
            high = builder.call(fn, [quarter[2], iv, quarter[3]])  # table[128 + (i & 127)]
            got = builder.select(builder.icmp_signed("<", iv, ir.Constant(_VB, [0] * BYTES)), high, low)
        else:
            got = ir.Constant(_VB, None)
            for i in range(BYTES):
                at = builder.zext(builder.extract_element(iv, _I64(i)), _I64)
                got = builder.insert_element(got, builder.load(builder.gep(t_p, [at])), _I64(i))
        builder.store(got, builder.bitcast(builder.gep(o_p, [out_off]), vp), align=1)
        return context.get_dummy_value()

    return sig, codegen


if config.DISABLE_JIT:  # the same lookups in numpy
    def _plain(lut, vals, off, best, last):
        gap = (best - vals[off : off + LANES]).astype(np.uint64)
        return lut[np.minimum(gap, np.uint64(last))].astype(np.int64)

    def lookup16(lut, vals, off, best, last):  # noqa: F811
        e = _plain(lut, vals, off, best, last)
        vals[off : off + LANES] = e
        return int(e.sum())

    def lookup16_gaps(lut, vals, off, best, last):  # noqa: F811
        gap = np.minimum((best - vals[off : off + LANES]).astype(np.uint64), np.uint64(last)).astype(np.int64)
        e = lut[gap].astype(np.int64)
        vals[off : off + LANES] = e
        return int(e.sum()), int((e * gap).sum())

    def lookup16_bytes(lut, vals, off, best, last, out, lo_off, hi_off):  # noqa: F811
        e = _plain(lut, vals, off, best, last)
        flat = out.reshape(-1)
        flat[lo_off : lo_off + LANES] = e & 255
        flat[hi_off : hi_off + LANES] = e >> 8
        return int(e.sum())

    def lookup64_bytes(table, idx, off, out, out_off):  # noqa: F811
        out.reshape(-1)[out_off : out_off + BYTES] = table[idx.reshape(-1)[off : off + BYTES]]
