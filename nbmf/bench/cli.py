"""`nbmf bench`: all codecs side by side on the same records, with the seed's gates."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nbmf.dictionary import DICT_SAMPLES, DICT_SIZE

EPILOG = """\
examples:
  nbmf bench ../shared/corpus/val.jsonl --json bench.json --plot bench.png
  nbmf bench data/collected --split val --fidelity both --versions stub --pairs pairs.jsonl
  nbmf bench data/sample/val.jsonl --limit 40 --anchors zlib-9,brotli-11

The zstd dictionary is trained on --train (default: train.jsonl beside a JSONL input, or the
train split of a dataset) and cached in $NBMF_CACHE_DIR (default ~/.cache/nbmf).
"""


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(x.strip() for x in text.split(",") if x.strip())


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="measure every codec against the anchors on the same records",
        description="Encode and decode every record with the legacy stub, zlib-9, zstd-19, zstd-19 with a "
                    "dictionary trained on the training split, brotli-11 and every encoder version in the "
                    "registry; print ratios, latencies and PASS/FAIL gates.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="corpus JSONL file or collected dataset directory")
    p.add_argument("--split", default="val", choices=("train", "val", "test"),
                   help="split to measure when INPUT is a dataset (default val)")
    p.add_argument("--train", default=None, help="training data for the zstd dictionary (JSONL or dataset dir)")
    p.add_argument("--limit", type=int, default=None, help="measure only the first N records")
    p.add_argument("--fidelity", default="lossless", choices=("lossless", "semantic", "both"))
    p.add_argument("--versions", default=None, help="registry versions, comma-separated (default: all)")
    p.add_argument("--anchors", default=None,
                   help="anchor codecs, comma-separated: legacy,zlib-9,zstd-19,zstd-19-dict,brotli-11 "
                        "(default: all; empty string: none)")
    p.add_argument("--dict-size", type=int, default=DICT_SIZE, help=f"zstd dictionary bytes (default {DICT_SIZE})")
    p.add_argument("--dict-samples", type=int, default=DICT_SAMPLES,
                   help=f"records drawn to train it (default {DICT_SAMPLES})")
    p.add_argument("--cache-dir", default=None, help="dictionary cache directory")
    p.add_argument("--json", dest="json_out", default=None, metavar="FILE", help="write all numbers as JSON")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="write ratio-vs-size plot")
    p.add_argument("--pairs", default=None, metavar="FILE",
                   help="write training pairs (original, compressed, reconstructed, ratio, similarity) JSONL")
    p.add_argument("--pairs-codec", default=None, help="codec whose pairs to write (default: registry current)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from nbmf.bench import report
    from nbmf.bench.run import BenchConfig
    from nbmf.bench.run import run as run_bench
    from nbmf.dictionary import DictionarySpec
    from nbmf.errors import NBMFError

    try:
        cfg = BenchConfig(
            input=Path(args.input), split=args.split, train=Path(args.train) if args.train else None,
            limit=args.limit, fidelity=args.fidelity, versions=_names(args.versions), anchors=_names(args.anchors),
            dict_spec=DictionarySpec(size=args.dict_size, samples=args.dict_samples),
            cache_dir=Path(args.cache_dir) if args.cache_dir else None, pairs_codec=args.pairs_codec,
            progress=not args.no_progress)
        result = run_bench(cfg)
    except (ValueError, FileNotFoundError, NBMFError) as e:
        print(f"nbmf bench: error: {e}", file=sys.stderr)
        return 2
    report.print_report(result)
    if args.json_out:
        report.write_json(result, args.json_out)
    if args.plot:
        report.write_plot(result, args.plot)
    if args.pairs:
        n = report.write_pairs(result, args.pairs)
        if n == 0:
            print(f"nbmf bench: no pairs written: codec {result['pairs_codec']!r} was not run", file=sys.stderr)
    return 0
