"""`nbmf collect`: build a Parquet dataset from files and L2 stores."""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
sources:
  FILE.jsonl        corpus records, one JSON object per line ({"id", "type", "data", ...})
  FILE.json         a JSON array of such records
  FILE.txt|.md      chunked at paragraph boundaries (one document per file)
  DIR               every .jsonl/.json/.txt/.md below it, recursively
  l2:///PATH.sqlite an SQLite L2 store (same as --l2 PATH); blobs decode through the registry
  DIR with records/ the memory service's warm tier, found by its layout (service://DIR or --service DIR force it):
                    records/<key>__<cls>.json, plain or encrypted; blobs/ is not collected

memory-service stores: a file encrypted by the service (AES-GCM) is decrypted with the key in the environment
variable DAENA_MEMORY_AES_KEY (as the service reads it: urlsafe or standard base64, hex, or a passphrase); without
it, or with another key, the file is a bad line that says so. Decrypted text goes only into the dataset in --out
(its Parquet shards hold every record's bytes); the bad line of an encrypted file names the file and the error,
never its decrypted content.
Each file is one record: id <key>, domain its tenant ("default" -> general), type inferred from the payload,
fidelity its class's by the service's policy (legal, finance, pii: lossless; chat, ops_log, research_note:
semantic; other classes: lossless), changed with --class-fidelity. A lossless record holds the payload's exact
raw bytes (nbmf.payload.to_raw), a semantic one its canonical form, as an L2 row of that fidelity does.

L2 rows: lossless blobs give their exact raw bytes; semantic ones their canonical form (nbmf.payload.canonical:
a JSON value as compact sorted JSON, kind json), flagged fidelity=semantic; a whole legacy preview likewise
(as JSON when its meta.type names a JSON value). Legacy previews cut at 2048 characters are skipped and counted
(manifest skipped.truncated_preview).

bad input never stops a run: a line or L2 row that cannot be read (invalid JSON or UTF-8, JSON too deep or
with a number too long for Python, a blob that is damaged, of an unknown version or not bytes at all, a
memory-service file that is malformed or cannot be decrypted) is counted and listed with its error
("l2:ID: ErrorClass: message", "PATH: reason") in the manifest's bad_lines; the first 20 are printed on stderr.
A source that cannot be read at all (missing, not SQLite, locked) stops the run: exit status 2, no manifest.

example:
  nbmf collect ../shared/corpus/train.jsonl --l2 store.sqlite -o data/collected
  DAENA_MEMORY_AES_KEY=... nbmf collect /var/lib/memory/warm -o data/service --class-fidelity chat=lossless
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "collect", help="collect records from files and L2 stores into a Parquet dataset",
        description="Collect memory records into a dataset directory of Parquet shards plus manifest.json. "
                    "Exact duplicates (sha256 of the raw bytes) are dropped; records are split into "
                    "train/val/test by a hash of (seed, group key), so a group never spans splits.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="files, directories, l2:///store.sqlite or a memory-service store directory")
    p.add_argument("-o", "--out", required=True, help="output dataset directory")
    p.add_argument("--l2", action="append", default=[], metavar="PATH", help="an SQLite L2 store (repeatable)")
    p.add_argument("--service", action="append", default=[], metavar="DIR",
                   help="a memory-service store (the directory holding records/), read as one (repeatable)")
    p.add_argument("--class-fidelity", action="append", default=[], metavar="CLS=FIDELITY",
                   help="fidelity of a memory-service class, over the service's policy, e.g. chat=lossless "
                        "(repeatable)")
    p.add_argument("--group-key", default="id",
                   help="dotted path of the split group in JSON records, e.g. metadata.dialogue_id (default: id; "
                        "corpus ids are per record, so the corpus can only be grouped by record)")
    p.add_argument("--type", dest="types", action="append", default=[],
                   choices=("conversation", "document", "structured"), help="keep only this type (repeatable)")
    p.add_argument("--domain", dest="domains", action="append", default=[], help="keep only this domain (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="stop after N records written")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--fractions", default="0.9,0.05,0.05", help="train,val,test fractions (default 0.9,0.05,0.05)")
    p.add_argument("--shard-rows", type=int, default=10_000, help="rows per Parquet shard (default 10000)")
    p.add_argument("--chunk-bytes", type=int, default=2048, help=".txt/.md chunk target in bytes (default 2048)")
    p.add_argument("--include-semantic", action="store_true",
                   help="let readers use semantic (lossy) records by default; they are always collected, flagged")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    from nbmf.data.collect import CollectConfig, collect
    from nbmf.data.service import parse_class_fidelity
    from nbmf.data.split import parse_fractions

    try:
        class_fidelity = parse_class_fidelity(args.class_fidelity)
        cfg = CollectConfig(
            sources=tuple(args.sources) + tuple(f"l2://{p}" for p in args.l2)
            + tuple(f"service://{p}" for p in args.service), out=args.out, class_fidelity=tuple(class_fidelity),
            group_key=args.group_key, types=tuple(args.types), domains=tuple(args.domains), limit=args.limit,
            seed=args.seed, fractions=parse_fractions(args.fractions), shard_rows=args.shard_rows,
            chunk_bytes=args.chunk_bytes, include_semantic=args.include_semantic, overwrite=args.overwrite,
            progress=not args.no_progress)
        mf = collect(cfg)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"nbmf collect: error: {e}", file=sys.stderr)
        return 2
    counts = {s: sum(c.values()) for s, c in mf["counts"].items()}
    print(json.dumps({"out": str(cfg.out), "records": mf["records"], "splits": counts,
                      "skipped": mf["skipped"], "bad_lines": mf["bad_lines"]["count"],
                      "content_hash": mf["content_hash"]}, indent=1))
    for ex in mf["bad_lines"]["examples"][:20]:
        print(f"bad: {ex['origin']}: {ex['reason']}", file=sys.stderr)
    if mf["bad_lines"]["count"] > 20:
        print(f"... {mf['bad_lines']['count'] - 20} more bad lines (see manifest.json)", file=sys.stderr)
    return 0
