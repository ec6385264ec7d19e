"""Records from sources the shared corpus does not have, cut like the corpus, and `nbmf bench` on them.

    python bench/unseen_proxy.py --work /tmp/unseen --out bench/results/unseen_proxy_v2.json

Why: issue 14 asks how the codec does on sources it has never seen (the team measures that on private
records). This is a stand-in built from files every machine of this project has (Debian's /usr/share and the
project's own virtual environment), none of them a source of ../shared/corpus (PROVENANCE.md):

- documents: Node.js API docs (markdown), CMake's reference (reStructuredText), the long descriptions of the
  installed Python packages (markdown/rst READMEs);
- structured: Node.js API docs as JSON (nested doc trees), iso-codes entries and schemas, CMake's MSBuild flag
  tables, CycloneDX SBOMs of installed wheels, Ray's Grafana dashboards;
- conversations: none here (no chat data on the machine); the table says so rather than guessing.

Cut as PROVENANCE.md describes: text at paragraph boundaries toward a per-file target drawn from sha256 (85% in
150 B-4 KiB, 15% in 4-14 KiB), chunks under 64 bytes dropped; JSON as the largest objects that fit a drawn
target (an object over it is split into its members), nothing over 16 KiB; exact duplicates dropped. Each
source keeps its records in sha256 order up to --budget bytes. Then ``nbmf bench`` runs once on all records
and once per source, zstd-19 with a dictionary trained on ../shared/corpus/train.jsonl (the same dictionary
v1 and v2 ship) measured in the same run; the JSON keeps every table and the records' sha256.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
MIN_BYTES, MAX_BYTES = 64, 16 * 1024


def _h(*parts) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def _target(key: str) -> int:
    """A chunk size drawn like the corpus's: 85% in 150 B-4 KiB, 15% in 4-14 KiB."""
    u = _h("target", key) / 2**64
    return int(150 + (4096 - 150) * u / 0.85) if u < 0.85 else int(4096 + (14336 - 4096) * (u - 0.85) / 0.15)


def _text_files() -> dict[str, list[Path]]:
    site = Path(sysconfig.get_paths()["purelib"])
    return {
        "nodejs-api-docs": sorted(Path("/usr/share/doc/nodejs/api").glob("*.md")),
        "cmake-help": sorted(Path(p) for p in glob.glob("/usr/share/cmake-*/Help/**/*.rst", recursive=True)),
        "python-package-readmes": sorted(site.glob("*.dist-info/METADATA")),
    }


def _json_files() -> dict[str, list[Path]]:
    site = Path(sysconfig.get_paths()["purelib"])
    return {
        "nodejs-api-json": sorted(Path("/usr/share/doc/nodejs/api").glob("*.json.gz")),
        "iso-codes": sorted(Path("/usr/share/iso-codes/json").glob("*.json")),
        "cmake-msbuild-flags": sorted(Path(p) for p in glob.glob("/usr/share/cmake-*/Templates/MSBuild/FlagTables/*.json")),
        "cyclonedx-sboms": sorted(site.glob("*.dist-info/sboms/*.json")),
        "ray-grafana-dashboards": sorted((site / "ray" / "dashboard" / "modules" / "metrics" / "dashboards").glob("*.json")),
    }


def _text(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.name == "METADATA":  # the long description follows the header block
        text = text.partition("\n\n")[2]
    return text


def text_records(source: str, path: Path) -> Iterator[str]:
    from nbmf.data.sources import chunk_text

    paragraphs, para, start = [], [], 0
    for i, line in enumerate(_text(path).splitlines(), 1):
        if line.strip():
            start = start if para else i
            para.append(line)
        elif para:
            paragraphs.append((start, para))
            para = []
    if para:
        paragraphs.append((start, para))
    for _, chunk in chunk_text(iter(paragraphs), _target(f"{source}:{path}")):
        if MIN_BYTES <= len(chunk.encode()) <= MAX_BYTES:
            yield chunk


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def json_records(source: str, path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        doc = json.load(f)

    def walk(obj, key: str):
        if isinstance(obj, dict):
            size = len(_dumps(obj).encode())
            if size <= min(MAX_BYTES, max(_target(key), MIN_BYTES)):
                if size >= MIN_BYTES:
                    yield obj
                return
            for k, v in obj.items():
                yield from walk(v, f"{key}/{k}")
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                yield from walk(v, f"{key}/{i}")

    yield from walk(doc, f"{source}:{path}")


def build(budget: int) -> dict[str, list[dict]]:
    """{source: corpus-format records}, each source's in sha256 order up to ``budget`` bytes of data."""
    seen: set[str] = set()
    out: dict[str, list[dict]] = {}
    for kind, files, make in (("document", _text_files(), text_records), ("structured", _json_files(), json_records)):
        for source, paths in files.items():
            items = [d for p in paths for d in make(source, p)]
            items.sort(key=lambda d: _h(source, _dumps(d)))
            recs, used = [], 0
            for data in items:
                key = _dumps(data)
                n = len(key.encode())
                if key in seen or used + n > budget:
                    continue
                seen.add(key)
                used += n
                recs.append({"id": f"{kind}-{source}-{len(recs)}", "domain": "general", "type": kind, "data": data,
                             "metadata": {"source": source, "length": n}})
            if recs:
                out[source] = recs
    return out


def bench(path: Path, versions: str, dest: Path) -> dict:
    cmd = [sys.executable, "-m", "nbmf", "bench", str(path), "--train", str(CORPUS / "train.jsonl"), "--versions",
           versions, "--anchors", "zstd-19-dict", "--json", str(dest), "--no-progress"]
    print("$ " + " ".join(cmd[1:]), flush=True)
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if p.returncode not in (0, 1):  # 1: a gate failed; the numbers stand
        raise SystemExit(f"nbmf bench failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return json.loads(dest.read_text())


def summary(result: dict) -> dict:
    rows = {r["codec"]: r for r in result["rows"]}
    anchor = rows["zstd-19-dict"]
    out = {"records": result["records"], "raw_bytes": result["raw_bytes"], "codecs": {}}
    for name, r in rows.items():
        by = {t: {"ratio": v["ratio"], "vs_zstd_dict": v["ratio"] / anchor["by_type"][t]["ratio"]}
              for t, v in r["by_type"].items()}
        out["codecs"][name] = {"ratio": r["all"]["ratio"], "vs_zstd_dict": r["all"]["ratio"] / anchor["all"]["ratio"],
                               "ratio_min": r["all"]["ratio_min"], "exact": r["all"]["exact_rate"],
                               "decode_ms_p95": r["all"].get("decode_ms_p95"), "fallbacks": r["fallbacks"],
                               "by_type": by}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/nbmf-unseen"), help="records and per-run JSON go here")
    ap.add_argument("--budget", type=int, default=120_000, help="bytes of record data per source")
    ap.add_argument("--versions", default="v1,v2", help="registry versions to measure")
    ap.add_argument("--out", type=Path, help="summary JSON")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    by_source = build(args.budget)
    every = [r for recs in by_source.values() for r in recs]
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in every)
    (args.work / "all.jsonl").write_text(lines, encoding="utf-8")
    report = {"command": "python bench/unseen_proxy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "records_sha256": hashlib.sha256(lines.encode()).hexdigest(), "versions": args.versions,
              "all": summary(bench(args.work / "all.jsonl", args.versions, args.work / "all.bench.json")),
              "sources": {}}
    for source, recs in by_source.items():
        path = args.work / f"{source}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
        report["sources"][source] = {"type": recs[0]["type"],
                                     **summary(bench(path, args.versions, args.work / f"{source}.bench.json"))}
    names = list(report["all"]["codecs"])
    print(f"{'source':<26}{'type':<12}{'records':>8}" + "".join(f"{n:>14}" for n in names))
    for source, s in [("ALL", {"type": "-", **report["all"]}), *report["sources"].items()]:
        print(f"{source:<26}{s['type']:<12}{s['records']:>8}"
              + "".join(f"{s['codecs'][n]['ratio']:>7.2f} ({s['codecs'][n]['vs_zstd_dict']:.2f}x)" for n in names))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
