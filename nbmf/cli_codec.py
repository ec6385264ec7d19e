"""`nbmf encode | decode | inspect`: one record per call, files or stdin/stdout."""
from __future__ import annotations

import argparse
import json
import sys

from nbmf.blob import Kind, from_envelope, to_envelope


def _read(path: str | None) -> bytes:
    if path in (None, "-"):
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def _write(data: bytes, path: str | None) -> None:
    if path in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        with open(path, "wb") as f:
            f.write(data)


def _blob_of(data: bytes):
    """Binary v1 blob, a JSON envelope, or a legacy JSON blob (passed through to the registry)."""
    if data[:1] == b"{":
        obj = json.loads(data)
        if isinstance(obj, dict) and "body" in obj and "encoder" in obj:
            return from_envelope(obj)
        return obj
    return data


def cmd_encode(a) -> int:
    from nbmf.registry import default_registry

    raw = _read(a.input)
    kind = Kind[a.kind.upper()]
    if kind == Kind.TEXT:
        payload = raw.decode("utf-8", "surrogatepass")
    elif kind == Kind.JSON:
        payload = json.loads(raw)
    else:
        payload = raw
    blob = default_registry().encode(payload, fidelity=a.fidelity, version=a.version, kind=kind)
    _write((json.dumps(to_envelope(blob)) + "\n").encode() if a.envelope else blob, a.output)
    return 0


def cmd_decode(a) -> int:
    from nbmf.payload import to_raw
    from nbmf.registry import default_registry

    res = default_registry().decode_result(_blob_of(_read(a.input)), max_output_size=a.max_output_size)
    if res.kind == Kind.JSON and not res.legacy:
        out = json.dumps(res.payload, ensure_ascii=False).encode("utf-8", "surrogatepass")
    elif res.legacy and not isinstance(res.payload, str):
        out = json.dumps(res.payload, ensure_ascii=False).encode("utf-8", "surrogatepass")
    else:
        out, _ = to_raw(res.payload)
    if res.truncated:
        print("nbmf decode: legacy semantic preview (truncated at 2048 characters)", file=sys.stderr)
    _write(out, a.output)
    return 0


def cmd_inspect(a) -> int:
    from nbmf.registry import default_registry

    h = default_registry().inspect(_blob_of(_read(a.input)))
    info = h if isinstance(h, dict) else h.to_dict()
    if a.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:12s} {v}")
    return 0


def register(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("encode", help="encode one record into an NBMF blob", formatter_class=fmt,
                       description="Encode a file (or stdin) with the current encoder version (or --version); "
                                   "write the binary blob (or --envelope JSON) to stdout or -o.")
    p.add_argument("input", nargs="?", help="file to encode (default: stdin)")
    p.add_argument("-o", "--output", help="output file (default: stdout)")
    p.add_argument("--kind", choices=["text", "json", "bytes"], default="text",
                   help="how to read the input: UTF-8 text (default), a JSON document, or raw bytes")
    p.add_argument("--fidelity", choices=["lossless", "semantic"], default="lossless",
                   help="lossless (exact) or semantic (canonical form: NFC + collapsed whitespace / compact JSON)")
    p.add_argument("--version", help="encoder version (stub, v1, ...); default: the registry's current")
    p.add_argument("--envelope", action="store_true", help="write the JSON envelope (base64 body) instead of binary")
    p.set_defaults(func=cmd_encode)
    p = sub.add_parser("decode", help="decode a blob (binary, JSON envelope, or legacy JSON)", formatter_class=fmt,
                       description="Decode a v1 blob, its JSON envelope, or a legacy stub blob; write the payload "
                                   "(text as UTF-8, JSON as JSON text, bytes as they are).")
    p.add_argument("input", nargs="?", help="blob file (default: stdin)")
    p.add_argument("-o", "--output", help="output file (default: stdout)")
    p.add_argument("--max-output-size", type=int, default=64 << 20, help="refuse blobs that decode to more bytes")
    p.set_defaults(func=cmd_decode)
    p = sub.add_parser("inspect", help="show a blob's header (checksum verified)", formatter_class=fmt,
                       description="Print the header of a v1 blob (or a legacy blob's meta) as text or --json.")
    p.add_argument("input", nargs="?", help="blob file (default: stdin)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_inspect)
