"""Encode on one device with the torch integer runtime, decode on the CPU kernel: identical payloads.

    python bench/cross_device.py models/v1 --device cuda --records 0     # 0 = every val record

On a GPU host (pip install -e ".[gpu]") this is the cross-device proof: frequency tables computed by
cuBLAS float64 matmuls of small integers equal the numba kernel's integers, so blobs written on the GPU
decode bit-exactly on any CPU. On a CPU-only host, --device cpu runs the same check through torch.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from nbmf.codecs.neural import body_of_words, load_codec
from nbmf.data.corpus import iter_records
from nbmf.runtime.coder import code_tables
from nbmf.runtime.torch_int import TorchIntModel


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", type=Path)
    p.add_argument("--device", default="cuda")
    p.add_argument("--val", default="../shared/corpus/val.jsonl")
    p.add_argument("--records", type=int, default=0)
    a = p.parse_args(argv)
    codec = load_codec(a.artifact)
    tm = TorchIntModel(codec.model, device=a.device)
    items = [(r.raw, r.kind) for r in iter_records(a.val, limit=a.records or None)]
    t, ok = time.time(), 0
    for raw, kind in items:
        ids = codec.tokenizer.encode(raw)
        if len(ids) == 0:
            ok += 1
            continue
        table = tm.frequencies(codec.sequence(ids, kind, 0)[:-1]).astype(np.int64)  # on the device
        body = body_of_words(code_tables(table, ids.astype(np.int64)))
        assert body == codec.encode_raw(raw, kind), "device tables differ from the CPU kernel's"
        assert codec.decode_raw(body, kind, len(raw)) == raw  # decoded on the CPU kernel
        ok += 1
    print(f"{ok}/{len(items)} records: encoded on {a.device}, decoded on CPU, identical ({time.time() - t:.0f} s)")


if __name__ == "__main__":
    main()
