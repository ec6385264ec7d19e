"""Does ONNX Runtime run the runtime's exact int8 products faster than nbmf's own kernel? Measured, not assumed.

    pip install onnx onnxruntime      # not project dependencies: this script is the reason they are not
    python bench/onnx_int8.py

For each product the runtime computes per step ([rows x 128] x [128 x n] for n in 384, 512, 2048, and
[rows x 512] x [512 x 128]) at rows 1, 32 and 512, it times ONNX Runtime's MatMulInteger (uint8 activations
with zero point 128, int8 weights, int32 out: exact by the operator's definition; CPU provider, one thread)
against nbmf.runtime.gemm on the same inputs, checks both against numpy's int64 product, and prints µs per
call and GMAC/s. One session.run per product is what an ORT step would pay; nbmf's loop makes no Python call
per step at all.
"""
from __future__ import annotations

import time

import numpy as np

from nbmf.runtime.gemm import gemm, pack, padded


def ort_session(w: np.ndarray):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k, n = w.shape[1], w.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w", "xz"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["rows", k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["rows", n])],
        [numpy_helper.from_array(np.ascontiguousarray(w.T), "w"), numpy_helper.from_array(np.array(128, np.uint8), "xz")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]), ort.__version__


def timed(fn, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'product':>22s} {'rows':>5s} {'ORT µs':>9s} {'nbmf µs':>9s} {'ORT GMAC/s':>11s} {'nbmf GMAC/s':>12s}")
    version = "?"
    for n, k in ((384, 128), (512, 128), (2048, 128), (128, 512)):
        w = rng.integers(-127, 128, (n, k)).astype(np.int8)
        sess, version = ort_session(w)
        p = pack(w)
        for rows in (1, 32, 512):
            x = rng.integers(-127, 128, (rows, k))
            xu = (x + 128).astype(np.uint8)
            want = x @ w.astype(np.int64).T
            y = sess.run(None, {"x": xu})[0]
            acc = np.zeros((rows, padded(n, 64)), np.int32)
            xp = np.zeros((rows, padded(k, 4)), np.uint8)
            xp[:, :k] = xu
            gemm(xp, rows, p.w, p.bias, acc)
            assert np.array_equal(y, want) and np.array_equal(acc[:, :n], want), "a product is not exact"
            reps = max(20, int(2e8 / (rows * n * k)))
            t_ort = timed(lambda: sess.run(None, {"x": xu}), reps)
            t_nb = timed(lambda: gemm(xp, rows, p.w, p.bias, acc), reps)
            macs = rows * n * k
            print(f"{f'[{rows}x{k}]x[{k}x{n}]':>22s} {rows:5d} {t_ort * 1e6:9.1f} {t_nb * 1e6:9.1f} "
                  f"{macs / t_ort / 1e9:11.1f} {macs / t_nb / 1e9:12.1f}")
    print(f"onnxruntime {version}; both exact on every product")


if __name__ == "__main__":
    main()
