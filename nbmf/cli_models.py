"""`nbmf versions | current | register`: the model directory's versions, its default and per-domain versions.

Every write goes through ``nbmf.modeldir`` (under its lock, each file replaced atomically); CURRENT stays the
default version and ``DOMAINS.json`` names the version of each domain that has its own. Encoders (library, CLI,
Serve) read them when they start: restart a long-running process, or reconfigure the Serve app, to pick a change up.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nbmf import modeldir


def _dir(a) -> Path:
    return Path(a.model_dir) if a.model_dir else modeldir.default_model_dir()


def routing(model_dir: Path) -> dict:
    """What ``nbmf versions`` shows: held versions, the default and each domain's own version."""
    return {"model_dir": str(model_dir), "versions": ["stub", *modeldir.versions(model_dir)],
            "current": modeldir.current(model_dir) or modeldir.STUB, "domains": modeldir.domain_versions(model_dir)}


def cmd_versions(a) -> int:
    info = routing(_dir(a))
    if a.json:
        print(json.dumps(info))
        return 0
    print(f"model dir   {info['model_dir']}")
    print(f"versions    {', '.join(info['versions'])}")
    print(f"current     {info['current']}   (the default: every domain below not listed)")
    for domain, version in info["domains"].items():
        print(f"  {domain:10s} {version}")
    return 0


def cmd_current(a) -> int:
    d = _dir(a)
    if a.domain is not None:
        modeldir.check_domain(a.domain)
    if a.unset:
        if a.domain is None or a.version is not None:
            raise ValueError("--unset takes --domain and no VERSION: the domain then encodes with CURRENT")
        modeldir.set_current(d, None, domain=a.domain)
    elif a.version is not None:
        modeldir.version_id(a.version)  # a malformed name is a usage error (exit 2)
        modeldir.set_current(d, a.version, domain=a.domain)
    print(modeldir.current(d, a.domain) or modeldir.STUB)
    return 0


def cmd_register(a) -> int:
    d = _dir(a)
    version, path = modeldir.register_next(a.artifact, d, make_current=a.default or a.domain is not None,
                                           domain=a.domain)
    print(json.dumps({"version": version, "path": str(path), "domain": a.domain, **routing(d)}))
    return 0


def register(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    md = "model directory (default: $NBMF_MODEL_DIR, else the checkout's models/)"

    p = sub.add_parser("versions", help="list the model directory's versions, CURRENT and per-domain versions",
                       description=__doc__, formatter_class=fmt)
    p.add_argument("--model-dir", help=md)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_versions)

    p = sub.add_parser(
        "current", help="show or set the version new records are encoded with (the default, or a domain's)",
        formatter_class=fmt,
        description="Without VERSION: print the version records of --domain (or any domain without its own) are\n"
                    "encoded with. With VERSION (a held version or 'stub'): point CURRENT, or --domain's entry of\n"
                    "DOMAINS.json, at it. --unset --domain D: D encodes with CURRENT again. Blobs already written\n"
                    "keep decoding: decode routes by the version in each blob's header.",
        epilog="examples:\n  nbmf current                       # the default\n"
               "  nbmf current v3 --domain legal      # legal records are encoded with v3 from now on\n"
               "  nbmf current --domain acme --unset  # acme goes back to the default")
    p.add_argument("version", nargs="?", help="version to set (stub, v1, ...); omit to print")
    p.add_argument("--domain", help="a domain (e.g. legal, or a tenant id as `nbmf collect` maps it)")
    p.add_argument("--unset", action="store_true", help="remove --domain's own version")
    p.add_argument("--model-dir", help=md)
    p.set_defaults(func=cmd_current)

    p = sub.add_parser(
        "register", help="add an exported artifact as the next version (for a domain, or as the default)",
        formatter_class=fmt,
        description="Copy an exported model artifact (hashes verified) into the model directory as its next\n"
                    "version vN, relabelled to vN when it was exported under another name, and with --domain\n"
                    "make it that domain's version (--default: CURRENT's). Registered versions are never replaced.\n"
                    "Prints one JSON object: the new version, its path and the routing after the change.",
        epilog="example (adapt the current version to one tenant's records, then serve that tenant with it):\n"
               "  nbmf collect /var/lib/memory/warm -o data/service\n"
               "  python -m train --config train/configs/finetune.yaml data.source=data/service \\\n"
               "      init_from=models/v1 run.max_minutes=20 run.storage_path=$PWD/runs   # last line: artifact dir\n"
               "  nbmf register <artifact dir> --domain acme")
    p.add_argument("artifact", help="exported artifact directory (manifest.json + the files it lists)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--domain", help="make the new version this domain's")
    who.add_argument("--default", action="store_true", help="make the new version CURRENT (every other domain's)")
    p.add_argument("--model-dir", help=md)
    p.set_defaults(func=cmd_register)
