"""The integer runtime: exact int8 products, the kernel's named interface, and results independent of the
instruction set, the row grouping and the thread count."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from numba import njit

from nbmf.runtime import kernels
from nbmf.runtime.gemm import gemm, gemm2_narrow, narrow_width, pack, padded
from nbmf.runtime.intmodel import IntModel
from nbmf.runtime.lookup import BYTES, lookup64_bytes


@pytest.mark.parametrize("n_out,n_in", [(1, 1), (5, 7), (64, 4), (70, 130), (384, 128), (128, 512), (2048, 128)])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 33])
def test_gemm_is_the_exact_integer_product(n_out, n_in, rows):
    rng = np.random.default_rng(n_out * 1000 + n_in + rows)
    w = rng.integers(-127, 128, (n_out, n_in)).astype(np.int8)
    w[0, :] = 127  # the extremes the offset trick must carry exactly
    x = rng.integers(-127, 128, (rows, n_in))
    x[-1, :] = -127
    p = pack(w)
    xu = np.full((rows + 2, padded(n_in, 4) + 8), 77, np.uint8)  # wider than needed, stale padding
    xu[:rows, :n_in] = x + 128
    xu[:rows, n_in : padded(n_in, 4)] = rng.integers(0, 256, (rows, padded(n_in, 4) - n_in))  # meets zero weights
    acc = np.full((rows + 2, padded(n_out, 64) + 64), -5, np.int32)
    gemm(xu, rows, p.w, p.bias, acc)
    assert np.array_equal(acc[:rows, :n_out], x @ w.astype(np.int64).T)
    assert (acc[rows:] == -5).all() and (acc[:, padded(n_out, 64):] == -5).all()  # nothing outside its block


@pytest.mark.parametrize("n_out", [1, 16, 20, 32, 33, 48, 64, 70, 100])
@pytest.mark.parametrize("n_in", [4, 37, 128])
def test_narrow_product_of_two_rows_is_exact(n_out, n_in):
    """The attention values' product: two rows (a weight's low and high bytes) times narrow blocks."""
    rng = np.random.default_rng(n_out * 1000 + n_in)
    w = rng.integers(-127, 128, (n_out, n_in)).astype(np.int8)
    x = rng.integers(0, 256, (2, n_in))
    width = narrow_width(n_out)
    assert width % 16 == 0 and n_out <= width <= 64 or width == 64
    p = pack(w, width)
    xu = np.zeros((2, padded(n_in, 4) + 4), np.uint8)
    xu[:, :n_in] = x
    o_pad = padded(n_out, width)
    acc = np.full((2, o_pad + 16), -5, np.int32)
    gemm2_narrow(xu, xu.shape[1], p.w, 0, padded(n_in, 4) // 4, o_pad // width, width, np.zeros(o_pad, np.int32),
                 acc, acc.shape[1])
    assert np.array_equal(acc[:, :n_out], x @ w.astype(np.int64).T)
    assert (acc[:, o_pad:] == -5).all()


@njit
def _lookup_all(table, idx, out):
    for off in range(0, idx.shape[0] - idx.shape[0] % BYTES, BYTES):
        lookup64_bytes(table, idx, off, out, off + 3)


def test_byte_table_lookup_is_the_table():
    """The GELU's 64-byte lookup (VBMI on this host where it has it, plain IR otherwise): every index, both halves."""
    rng = np.random.default_rng(7)
    table = rng.integers(0, 256, 256).astype(np.uint8)
    idx = np.concatenate([np.arange(256), rng.integers(0, 256, 3 * BYTES)]).astype(np.uint8)
    out = np.full(idx.size + 3 + BYTES, 7, np.uint8)
    _lookup_all(table, idx, out)
    assert np.array_equal(out[3 : 3 + idx.size], table[idx])
    assert (out[:3] == 7).all() and (out[3 + idx.size :] == 7).all()  # nothing outside its 64 bytes


@pytest.mark.parametrize("vocab", [16, 70, 2048])
def test_table_pass_gives_frequencies_and_their_gap_sum(vocab):
    """The head's table pass (kernels.lookup_table): frequencies lut[min(best - logit, last)] in place, their block
    sums and total, and with ``gapped`` the sum of f * gap a temperature moves by, in the same pass (16 lanes at a
    time and a scalar tail), as plain numpy computes them; without it the same table and e = 0."""
    rng = np.random.default_rng(vocab)
    lut = np.sort(rng.integers(1, 2**20, 300))[::-1].astype(np.int32)
    logits = rng.integers(-1000, 200, vocab).astype(np.int64)  # gaps past the lut's end are capped at its last entry
    best = int(logits.max())
    gap = np.minimum(best - logits, len(lut) - 1)
    f = lut[gap].astype(np.int64)
    for gapped in (True, False):
        freq = logits.copy()
        blocks = np.zeros(-(-vocab // kernels.BLOCK), np.int64)
        total, e = kernels.lookup_table(lut, freq, best, blocks, gapped)
        assert np.array_equal(freq, f)
        assert np.array_equal(blocks, np.add.reduceat(f, np.arange(0, vocab, kernels.BLOCK)))
        assert total == f.sum()
        assert e == ((f * gap).sum() if gapped else 0)


def test_pack_refuses_what_the_kernel_cannot_carry():
    with pytest.raises(ValueError, match="-127, 127"):
        pack(np.full((2, 2), -128, np.int8))
    with pytest.raises(ValueError, match="2-d"):
        pack(np.zeros(3, np.int8))


def test_kernel_interface_is_pinned():
    """The kernel takes named groups; renaming, reordering or retyping one is a deliberate, visible change."""
    assert kernels.Params._fields == ("emb", "norm_k", "mixer_type", "mixer_idx", "out", "up", "act_lut", "down",
                                      "attn", "conv", "rec", "head", "head_lut")
    assert kernels.Linear._fields == ("w", "bias", "m", "s")
    assert kernels.Attention._fields == ("qkv", "score_m", "score_s", "slopes", "lut")
    assert kernels.Conv._fields == ("taps", "m", "s", "dilation", "lut")
    assert kernels.Recurrent._fields == ("zc", "lut")
    assert kernels.State._fields == ("kp", "kb", "vp", "rstate", "chist", "pos")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from helpers.artifacts import tiny_artifact
    from nbmf.codecs.neural import load_codec

    return load_codec(tiny_artifact(tmp_path_factory.mktemp("rt") / "v1", family="hybrid", steps=8))


def test_swapped_or_misshapen_arrays_are_refused(tiny):
    params = dict(tiny.model.params)
    with pytest.raises(ValueError, match="w1_m"):  # [layers, hidden] where [layers, d] is due, and back
        IntModel(tiny.cfg, dict(params, w1_m=params["w2_m"], w2_m=params["w1_m"]))
    with pytest.raises(ValueError, match="multipliers"):  # same shape, other meaning: m and s trade places
        IntModel(tiny.cfg, dict(params, wo_m=params["wo_s"], wo_s=params["wo_m"]))
    with pytest.raises(ValueError, match="lacks"):
        IntModel(tiny.cfg, {k: v for k, v in params.items() if k != "head_lut"})
    wide = dataclasses.replace(tiny.cfg, d_model=2 * tiny.cfg.d_model)
    with pytest.raises(ValueError, match="do not fit"):
        IntModel(wide, params)


def test_rows_in_any_grouping_give_the_same_tables(tiny):
    """One record token by token, in one pass, and interleaved with others in lockstep: the same integers."""
    rng = np.random.default_rng(3)
    seqs = [rng.integers(0, tiny.cfg.vocab_size, n) for n in (1, 70, 150)]  # past the attention window
    want = [tiny.model.frequencies(s) for s in seqs]
    step_by_step = tiny.model.new_state(1)
    rows = np.concatenate([tiny.model.step(step_by_step, s[t : t + 1], [0]) for s in seqs[1:2] for t in range(len(s))])
    assert np.array_equal(rows, want[1])
    st = tiny.model.new_state(3)
    lock = {k: [] for k in range(3)}
    for t in range(150):
        live = [k for k in range(3) if t < len(seqs[k])]
        out = tiny.model.step(st, [seqs[k][t] for k in live], live)
        for j, k in enumerate(live):
            lock[k].append(out[j])
    assert all(np.array_equal(np.array(lock[k]), want[k]) for k in range(3))


def test_threads_do_not_change_bytes(tiny):
    from nbmf.codecs.neural import NeuralCodec

    rng = np.random.default_rng(5)
    items = [(bytes(rng.integers(32, 127, int(n)).astype(np.uint8)), 2) for n in rng.integers(0, 400, 13)]
    one = NeuralCodec(tiny.name, tiny.cfg, tiny.model, tiny.tokenizer, threads=1)
    three = NeuralCodec(tiny.name, tiny.cfg, tiny.model, tiny.tokenizer, threads=3)
    bodies = one.encode_many(items)
    assert three.encode_many(items) == bodies
    jobs = [(b, k, len(r)) for b, (r, k) in zip(bodies, items)]
    assert three.decode_many(jobs) == one.decode_many(jobs) == [r for r, _ in items]


def test_portable_build_gives_the_vnni_build_integers(tiny, tmp_path):
    """The same kernel compiled without VNNI and VBMI (plain LLVM IR) in a fresh process: identical tables."""
    seq = np.random.default_rng(1).integers(0, tiny.cfg.vocab_size, 140)
    script = ("import sys, json, numpy as np; from nbmf.codecs.neural import load_codec; "
              "from nbmf.runtime.gemm import host_has; c = load_codec(sys.argv[1]); "
              "f = c.model.frequencies(np.array(json.loads(sys.argv[2]), np.int64)); "
              "print(json.dumps([host_has('avx512bw'), f.astype(np.int64).tolist()]))")
    env = dict(os.environ, NBMF_GEMM="portable", NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    p = subprocess.run([sys.executable, "-c", script, str(tiny.path), json.dumps(seq.tolist())], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    host_specific, tables = json.loads(p.stdout)
    assert host_specific is False
    assert np.array_equal(np.array(tables), tiny.model.frequencies(seq))  # on a host without VNNI: portable twice
