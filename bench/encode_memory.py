"""Peak memory of one encode, by record size, against the budget 64 MiB + 100 x the record's size.

    python bench/encode_memory.py --out bench/results/encode_memory.json

Each size runs in a fresh process: the registry and model load and a warm-up encode first, then the peak
resident set (ru_maxrss) is reset as far as Linux allows (/proc/self/clear_refs) and one record of that size
(text cut from val records, repeated to length) is encoded; the figure is the peak RSS during that encode
minus the RSS before it, and tracemalloc's peak of Python and numpy allocations.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = (1 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 16 << 20)

CHILD = r"""
import json, resource, sys, tracemalloc
from pathlib import Path
from nbmf.data.corpus import read_corpus
from nbmf.registry import Registry, default_model_dir

size, corpus = int(sys.argv[1]), sys.argv[2]
text = " ".join(r["data"] if isinstance(r["data"], str) else json.dumps(r["data"]) for r in read_corpus(corpus, 200))
record = (text * (size // len(text) + 1)).encode()[:size].decode("utf-8", "ignore")
reg = Registry(default_model_dir())
reg.encode(record[:4000])  # load and compile outside the measurement

def rss_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (the peak) to the current RSS
before = rss_kib()
tracemalloc.start()
blob = reg.encode(record)
traced_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
hwm = next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
print(json.dumps({"bytes": len(record.encode()), "rss_peak_delta_mib": round((hwm - before) / 1024, 2),
                  "traced_peak_mib": round(traced_peak / 2**20, 2), "version": reg.inspect(blob).version,
                  "blob_bytes": len(blob)}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "encode_memory.json")
    a = ap.parse_args(argv)
    corpus = a.corpus or next(p for p in (REPO.parent / "shared" / "corpus" / "val.jsonl",
                                          REPO / "data" / "sample" / "val.jsonl") if p.exists())
    rows = []
    for size in SIZES:
        out = subprocess.run([sys.executable, "-c", CHILD, str(size), str(corpus)], capture_output=True, text=True,
                             check=True, cwd=REPO)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["budget_mib"] = round(64 + 100 * row["bytes"] / 2**20, 2)
        row["within_budget"] = row["rss_peak_delta_mib"] <= row["budget_mib"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all(r["within_budget"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
