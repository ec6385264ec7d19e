"""`nbmf`: encode, decode and inspect blobs; manage versions; collect datasets; bench codecs; migrate stores.

Each subcommand lives in its own module exposing ``register(subparsers)``, which sets ``func``; a module
listed in SUBCOMMAND_MODULES that is not installed is skipped, one that fails to import for another reason
fails loudly. Exit status: 0 done, 1 NBMFError (the data was refused), 2 usage error.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from nbmf.errors import NBMFError

SUBCOMMAND_MODULES = ["nbmf.cli_codec", "nbmf.cli_models", "nbmf.data.cli", "nbmf.bench.cli", "nbmf.migrate"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nbmf", description="NBMF: learned lossless compression of AI-agent memory records.",
        epilog="examples:\n  nbmf encode note.txt > note.nbmf\n  nbmf decode note.nbmf\n"
               "  cat record.json | nbmf encode --kind json | nbmf inspect\n"
               "  nbmf bench ../shared/corpus/val.jsonl --json bench.json --plot bench.png\n"
               "  nbmf current v2 --domain legal && nbmf encode --domain legal contract.txt > c.nbmf\n"
               "  nbmf migrate /var/lib/memory/warm --into l2.sqlite\n\n"
               "exit status: 0 done; 1 the input was refused (damaged, unknown version, too large: an NBMFError,\n"
               "named on stderr); 2 usage error (bad option, missing file).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a real missing dependency inside the module: fail loudly
                raise
            continue  # that subcommand is not part of this installation
        module.register(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NBMFError as e:
        print(f"nbmf {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:  # an optional dependency (nbmf.extras says which extra brings it)
        print(f"nbmf {args.command}: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError) as e:
        print(f"nbmf {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
