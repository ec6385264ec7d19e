"""The device runtime (nbmf.runtime.torch_int) against the CPU kernels: identical bytes both ways, and speed.

    python bench/cross_device.py models/v1 --device cuda --out bench/results/gpu_v1      # a GPU host
    python bench/cross_device.py models/v1 --device cpu --records 40 --batches 16        # any host (slow)

Exactness, on every val record (``--records 0``): bodies encoded on the device equal the CPU kernel's byte for
byte and decode on the CPU kernel; bodies encoded on the CPU decode on the device. Speed: records/s of encode and
decode on the device at each lockstep batch (``--batches``: records decoded together, and records per encode
call), on val records cycled to ``--per-batch`` times the batch, against the CPU kernels with every core of this
host on the same records in the same run (the baseline); decode runs twice, on the device alone and with the
host's threads taking the longest records (``TorchIntModel.decode``, ``host_threads``). Writes <out>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from nbmf.codecs.neural import load_codec
from nbmf.data.corpus import iter_records


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", type=Path)
    p.add_argument("--device", default="cuda")
    p.add_argument("--val", default="../shared/corpus/val.jsonl")
    p.add_argument("--records", type=int, default=0, help="val records for the exactness proof (0: all)")
    p.add_argument("--batches", default="256,1024,4096", help="comma-separated lockstep batch sizes to time")
    p.add_argument("--per-batch", type=int, default=2, help="records timed per batch size: this many batches")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU baseline threads")
    p.add_argument("--out", type=Path, help="write <out>.json")
    a = p.parse_args(argv)
    import torch

    items = [(r.raw, r.kind) for r in iter_records(a.val, limit=a.records or None)]
    raws = [raw for raw, _ in items]
    cpu = load_codec(a.artifact, threads=a.threads, device=None)
    dev = load_codec(a.artifact, threads=a.threads, device=a.device)
    dev.runtime.host_threads = 0  # the proof decodes every record on the device
    report = {"device": torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor(),
              "torch": torch.__version__, "cpu_threads": a.threads, "records": len(items),
              "bytes": sum(map(len, raws))}

    # -- exactness: every record, both directions -------------------------------------------------------------
    cpu_bodies, t_cpu = timed(cpu.encode_many, items)
    dev_bodies, t_dev = timed(dev.encode_many, items)
    same = sum(x == y for x, y in zip(cpu_bodies, dev_bodies))
    back_cpu, _ = timed(cpu.decode_many, [(b, k, len(r)) for b, (r, k) in zip(dev_bodies, items)])
    back_dev, _ = timed(dev.decode_many, [(b, k, len(r)) for b, (r, k) in zip(cpu_bodies, items)])
    report["exact"] = {"identical_bodies": same, "device_encode_cpu_decode": sum(x == y for x, y in zip(back_cpu, raws)),
                       "cpu_encode_device_decode": sum(x == y for x, y in zip(back_dev, raws))}
    print(f"{len(items)} records: {same} bodies identical; device-encoded decoded on CPU: "
          f"{report['exact']['device_encode_cpu_decode']}; CPU-encoded decoded on {a.device}: "
          f"{report['exact']['cpu_encode_device_decode']}", flush=True)

    # -- speed --------------------------------------------------------------------------------------------------
    report["speed"] = []
    for batch in [int(x) for x in a.batches.split(",")]:
        n = batch * a.per_batch
        its = [items[i % len(items)] for i in range(n)]
        jobs = [(cpu_bodies[i % len(items)], k, len(r)) for i, (r, k) in enumerate(its)]
        dev.runtime.slots = batch
        row = {"batch": batch, "records": n, "bytes": sum(len(r) for r, _ in its)}
        for name, codec, helpers in (("device", dev, 0), ("device+host", dev, a.threads), ("cpu", cpu, 0)):
            dev.runtime.host_threads = helpers
            row[name] = {}
            if name != "device+host":  # (encode never uses the host threads)
                codec.encode_many(its[:batch])  # warm-up
                enc, te = timed(lambda: [b for i in range(0, n, batch) for b in codec.encode_many(its[i : i + batch])])
                assert enc == [cpu_bodies[i % len(items)] for i in range(n)]
                row[name] = {"encode_s": te, "encode_records_s": n / te}
            dec, td = timed(codec.decode_many, jobs)
            assert dec == [r for r, _ in its]
            row[name].update({"decode_s": td, "decode_records_s": n / td})
        row["encode_vs_cpu"] = row["cpu"]["encode_s"] / row["device"]["encode_s"]
        for name in ("device", "device+host"):
            row[f"{name}_decode_vs_cpu"] = row["cpu"]["decode_s"] / row[name]["decode_s"]
        report["speed"].append(row)
        print(f"batch {batch:5d} ({n} records): {a.device} encode {row['device']['encode_records_s']:6.0f} rec/s "
              f"({row['encode_vs_cpu']:.2f}x CPU x{a.threads}); decode {row['device']['decode_records_s']:6.0f} rec/s "
              f"({row['device_decode_vs_cpu']:.2f}x), with {a.threads} host threads "
              f"{row['device+host']['decode_records_s']:6.0f} rec/s ({row['device+host_decode_vs_cpu']:.2f}x)",
              flush=True)
    if a.out:
        Path(f"{a.out}.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
