"""Warm-start adaptation on a source the released model saw little of: bodies before and after N minutes.

    python bench/adapt_unseen.py --source pypa-advisory-db --minutes 5 10 --work /tmp/adapt \\
        --out bench/results/adapt_unseen_pypa.json --plot bench/results/adapt_unseen_pypa.png

1. The source's records of the shared corpus: its train records (``metadata.source``) are collected into a
   dataset with ``nbmf collect``; its val records (other units: the corpus never splits a document or package
   across train and val) are the measurement set, never trained on.
2. For each N in --minutes, exactly the documented command (the last line it prints is the artifact):
   ``python -m train --config train/configs/finetune.yaml data.source=<dataset> init_from=models/v1
   run.max_minutes=N run.storage_path=<work>/runs``, plus ``--address local`` (a private Ray: on a machine
   where others run Ray, the default joins their cluster and waits for its CPUs) and ``wandb.enabled=false``
3. On the val records, in this one run: every record's neural body under v1 and under each adapted model
   (each body decoded back and compared with the record: exact round trips), the blob the registry stores
   (smallest of neural, zstd fallback and stub, header included), and the zstd-19 anchor with v1's dictionary
   and with the adapted model's own (trained on the same adaptation records). Ratios are raw bytes / bytes.

The machine may be shared: the load average before and after each run and the steps each run made are recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"


def filter_source(src: Path, source: str, dest: Path) -> int:
    n = 0
    with open(src, encoding="utf-8") as f, open(dest, "w", encoding="utf-8") as out:
        for line in f:
            if json.loads(line).get("metadata", {}).get("source") == source:
                out.write(line)
                n += 1
    return n


def run(cmd: list[str], log: Path) -> str:
    """Run ``cmd`` from the repository root; its stdout and stderr go to ``log``; returns the last stdout line."""
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    log.write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
    if p.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed ({p.returncode}); see {log}")
    lines = [x for x in p.stdout.splitlines() if x.strip()]
    return lines[-1] if lines else ""


def measure(artifact: Path, records) -> dict:
    """Neural bodies (each decoded back), stored blobs and the zstd-19 anchor with this artifact's dictionary."""
    from nbmf.artifact import read_dictionary, read_manifest
    from nbmf.bench.anchors import Zstd
    from nbmf.codecs.neural import load_codec
    from nbmf.payload import from_raw
    from train.export import registry_with

    codec = load_codec(artifact)
    items = [(r.raw, r.kind) for r in records]
    t = time.perf_counter()
    bodies = codec.encode_many(items)
    encode_s = time.perf_counter() - t
    coded = [i for i, b in enumerate(bodies) if b is not None]
    t = time.perf_counter()
    back = codec.decode_many([(bodies[i], records[i].kind, len(records[i].raw)) for i in coded])
    decode_s = time.perf_counter() - t
    exact = sum(b == records[i].raw for i, b in zip(coded, back))
    reg, version = registry_with(artifact)
    blobs = reg.encode_many([from_raw(r.raw, r.kind) for r in records], kinds=[r.kind for r in records],
                            version=version)
    stored_exact = sum(d.payload == from_raw(r.raw, r.kind) for d, r in zip(reg.decode_many(blobs), records))
    dictionary = read_dictionary(artifact, read_manifest(artifact))
    zstd = Zstd(dictionary=dictionary)
    raw = sum(len(r.raw) for r in records)
    neural = sum(len(bodies[i]) for i in coded)
    raw_coded = sum(len(records[i].raw) for i in coded)
    frames = sum(len(zstd.compress(r.raw)) for r in records)
    return {"records": len(records), "neural_coded": len(coded), "neural_exact": exact, "raw_bytes": raw,
            "neural_body_bytes": neural, "neural_ratio": raw_coded / neural,
            "stored_bytes": sum(len(b) for b in blobs), "stored_ratio": raw / sum(len(b) for b in blobs),
            "stored_exact": stored_exact, "zstd19_own_dict_bytes": frames, "zstd19_own_dict_ratio": raw / frames,
            "encode_s": round(encode_s, 2), "decode_s": round(decode_s, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="pypa-advisory-db", help="corpus metadata.source to adapt to")
    p.add_argument("--minutes", type=float, nargs="+", default=[5.0, 10.0], help="adaptation budgets")
    p.add_argument("--base", type=Path, default=ROOT / "models" / "v1", help="the released artifact")
    p.add_argument("--work", type=Path, required=True, help="scratch dir (dataset, runs, logs)")
    p.add_argument("--out", type=Path, required=True, help="result JSON")
    p.add_argument("--plot", type=Path, help="PNG of the ratios")
    a = p.parse_args(argv)
    from nbmf.bench.anchors import Zstd
    from nbmf.data.corpus import iter_records

    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    n_train = filter_source(CORPUS / "train.jsonl", a.source, work / "train.jsonl")
    n_val = filter_source(CORPUS / "val.jsonl", a.source, work / "val.jsonl")
    dataset = work / "dataset"
    collect = [sys.executable, "-m", "nbmf", "collect", str(work / "train.jsonl"), "--out", str(dataset),
               "--overwrite", "--no-progress"]
    run(collect, work / "collect.log")
    val = list(iter_records(work / "val.jsonl"))
    base = measure(a.base, val)
    from nbmf.artifact import read_dictionary, read_manifest

    v1_zstd = Zstd(dictionary=read_dictionary(a.base, read_manifest(a.base)))
    v1_frames = sum(len(v1_zstd.compress(r.raw)) for r in val)
    result = {"source": a.source, "train_records": n_train, "val_records": n_val, "base": str(a.base),
              "commands": [" ".join(["python -m nbmf", *collect[3:]])], "cpus": os.cpu_count(),
              "zstd19_base_dict_ratio": base["raw_bytes"] / v1_frames, "before": base, "after": []}
    print(json.dumps({"before": base}), flush=True)
    for minutes in a.minutes:
        cmd = [sys.executable, "-m", "train", "--config", "train/configs/finetune.yaml", f"data.source={dataset}",
               f"init_from={a.base}", f"run.max_minutes={minutes:g}", f"run.storage_path={work / 'runs'}",
               f"run.name=adapt-{minutes:g}min", "wandb.enabled=false", "--address", "local"]
        load_before = os.getloadavg()
        t = time.time()
        artifact = Path(run(cmd, work / f"train-{minutes:g}.log"))
        wall = time.time() - t
        manifest = read_manifest(artifact)
        row = {"minutes": minutes, "command": " ".join(["python -m train", *cmd[3:]]), "artifact": str(artifact),
               "wall_s": round(wall, 1), "steps": manifest["metrics"].get("steps"),
               "trained_s": manifest["training"].get("trained_seconds"),
               "loadavg_before": load_before, "loadavg_after": os.getloadavg(), **measure(artifact, val)}
        row["neural_bytes_vs_before"] = row["neural_body_bytes"] / base["neural_body_bytes"]
        row["stored_bytes_vs_before"] = row["stored_bytes"] / base["stored_bytes"]
        result["after"].append(row)
        print(json.dumps(row), flush=True)
        result["commands"].append(row["command"])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    if a.plot:
        plot(result, a.plot)
    return 0


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"minutes": 0.0, **result["before"]}, *result["after"]]
    x = [r["minutes"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(x, [r["neural_ratio"] for r in rows], "o-", label="neural body (exact round trips)")
    ax.plot(x, [r["stored_ratio"] for r in rows], "s-", label="stored blob (registry, header incl.)")
    ax.plot(x, [r["zstd19_own_dict_ratio"] for r in rows], "^--", label="zstd-19 + the artifact's dictionary")
    ax.axhline(result["zstd19_base_dict_ratio"], color="gray", ls=":", label="zstd-19 + v1's dictionary")
    ax.set_xlabel("adaptation minutes (2 CPU workers; 0 = v1)")
    ax.set_ylabel("ratio (raw / compressed bytes)")
    ax.set_title(f"{result['source']}: {result['val_records']} val records never trained on")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
