"""`nbmf encode | decode | inspect`: one record per call, files or stdin/stdout.

``nbmf encode f | nbmf decode`` gives back the bytes of ``f`` for any file: ``--kind auto`` (the
default) stores valid UTF-8 as text and anything else as bytes, and decode writes text as UTF-8.
"""
from __future__ import annotations

import argparse
import json
import sys

from nbmf.blob import Fidelity, Kind, is_legacy, peek_header, to_envelope
from nbmf.errors import CorruptBlobError, FormatError, OutputTooLargeError, UnknownVersionError
from nbmf.modeldir import check_domain, version_id

KINDS = ("auto", *(k.label for k in Kind))  # --kind: auto, text, json, bytes


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
    """A binary blob, or what ``nbmf.registry.as_blob`` makes of a JSON envelope / legacy blob (JSON text, maybe
    space-padded).

    No blob starts with ASCII whitespace or '{': a v2 descriptor byte is >= 0x80, and a v1 one there would have
    format bits other than 01 or the invalid kind bits 11, so a leading '{' after whitespace always means JSON.
    """
    from nbmf.registry import as_blob

    text = data.lstrip(b" \t\r\n")
    return as_blob(text) if is_legacy(text) else data


def _payload_of(raw: bytes, kind: str):
    """(payload, Kind) of the input bytes as --kind says."""
    if kind == "auto":
        try:
            return raw.decode("utf-8"), Kind.TEXT
        except UnicodeDecodeError:
            return raw, Kind.BYTES
    kind = Kind.of(kind)
    if kind == Kind.TEXT:
        try:
            return raw.decode("utf-8", "surrogatepass"), Kind.TEXT
        except UnicodeDecodeError as e:
            raise FormatError(f"input is not UTF-8 text ({e}); use --kind bytes or --kind auto") from None
    if kind == Kind.JSON:
        try:
            return json.loads(raw), Kind.JSON
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FormatError(f"input is not a JSON document ({e}); use --kind text to store it as text") from None
    return raw, Kind.BYTES


def _output_bytes(res) -> bytes:
    """What ``decode`` writes: text as UTF-8, JSON as JSON text (the canonical form for semantic), bytes as is."""
    p = res.payload
    if isinstance(p, (bytes, bytearray)):
        return bytes(p)
    if isinstance(p, str):
        return p.encode("utf-8", "surrogatepass")
    if res.fidelity == Fidelity.SEMANTIC:
        text = json.dumps(p, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    else:
        text = json.dumps(p, ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


def cmd_encode(a) -> int:
    from nbmf.registry import default_registry

    reg = default_registry()
    if a.version is not None:
        version_id(a.version)  # a name that is neither 'stub' nor 'vN' is a usage error (ValueError, exit 2)
        if a.version not in reg.versions():
            raise UnknownVersionError(f"no encoder {a.version!r} here; this registry holds {', '.join(reg.versions())}")
    if a.domain is not None:
        check_domain(a.domain)  # a usage error (exit 2) before the input is read
    payload, kind = _payload_of(_read(a.input), a.kind)
    blob = reg.encode(payload, fidelity=a.fidelity, version=a.version, kind=kind, domain=a.domain)
    _write((json.dumps(to_envelope(blob)) + "\n").encode() if a.envelope else blob, a.output)
    return 0


def cmd_decode(a) -> int:
    from nbmf.registry import default_registry

    res = default_registry().decode_result(_blob_of(_read(a.input)), max_output_size=a.max_output_size)
    if res.truncated:
        print("nbmf decode: legacy semantic preview (the stored form was cut at 2048 characters)", file=sys.stderr)
    _write(_output_bytes(res), a.output)
    return 0


def body_codec(h) -> str:
    """What wrote a blob's body, in words (docs/FORMAT.md, encoder ids and the fallback bit)."""
    if h.encoder_id == 0:
        return "stub (zlib-9)"
    if h.fallback:
        return f"{h.version}'s classical fallback (zstd-19 with the dictionary of {h.version}'s artifact)"
    return f"{h.version} (neural)"


def cmd_inspect(a) -> int:
    """Print the header; a blob that fails its checksum still shows what its header says, then exits 1.

    A v2 blob's checksum covers its content, so inspect decodes it to check it; without the version's model the
    checksum is shown as unchecked."""
    from nbmf.registry import default_registry

    blob = _blob_of(_read(a.input))
    error, checksum = None, "ok"
    reg = default_registry()
    try:
        h = reg.inspect(blob)
        if not isinstance(h, dict) and h.format_version >= 2:
            try:
                reg.decode_result(blob)
            except (UnknownVersionError, OutputTooLargeError) as e:
                checksum = f"unchecked ({type(e).__name__})"
    except CorruptBlobError as e:
        h, error, checksum = peek_header(blob), e, "FAILED"  # raises again if not even the header can be read
    if isinstance(h, dict):
        info = dict(h)
    else:
        info = h.to_dict()
        info.update(codec=body_codec(h), blob_bytes=len(blob), body_bytes=len(blob) - h.header_size,
                    checksum=checksum)
    if a.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:12s} {v}")
    if error is not None:
        raise error
    return 0


def register(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "encode", help="encode one record into an NBMF blob", formatter_class=fmt,
        description="Encode a file (or stdin) with the current encoder version (or --domain's version, or\n"
                    "--version) and write the binary blob (or its --envelope JSON) to stdout or -o. A neural\n"
                    "version writes the smallest verified body of its model, its zstd fallback and the stub (the\n"
                    "header says which). Decode needs no domain: the blob's header names its version.",
        epilog="examples:\n  nbmf encode note.txt > note.nbmf\n"
               "  nbmf encode --kind json --fidelity semantic record.json -o record.nbmf\n"
               "  nbmf encode --domain legal contract.txt -o contract.nbmf\n"
               "  echo 'hello' | nbmf encode --version stub --envelope")
    p.add_argument("input", nargs="?", help="file to encode (default: stdin; '-' too)")
    p.add_argument("-o", "--output", help="output file (default: stdout)")
    p.add_argument("--kind", choices=KINDS, default="auto",
                   help="how to read the input: auto (default: UTF-8 text if it is, else bytes; decode gives "
                        "the same bytes back), text, json (a JSON value; decode writes it as json.dumps does), bytes")
    p.add_argument("--fidelity", choices=[f.label for f in Fidelity], default="lossless",
                   help="lossless (exact, the default) or semantic (canonical form: NFC text with collapsed "
                        "whitespace, compact JSON with sorted keys)")
    p.add_argument("--version", help="encoder version: stub, v1, ... (default: --domain's version, else the "
                                     "model registry's CURRENT)")
    p.add_argument("--domain", help="the record's domain (e.g. legal, or a tenant id): encode with the version "
                                    "`nbmf current --domain` set for it; a domain without one uses CURRENT")
    p.add_argument("--envelope", action="store_true", help="write the JSON envelope (base64 body) instead of binary")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser(
        "decode", help="decode a blob (binary, JSON envelope, or legacy JSON)", formatter_class=fmt,
        description="Decode a blob (format v2 or v1), its JSON envelope, or a legacy stub blob, and write\n"
                    "the payload: text as UTF-8, JSON as JSON text, bytes as they are. A damaged blob is an\n"
                    "error (exit 1), never wrong output.",
        epilog="examples:\n  nbmf decode note.nbmf > note.txt\n  nbmf encode note.txt | nbmf decode\n"
               "  nbmf decode legacy-record.json")
    p.add_argument("input", nargs="?", help="blob file (default: stdin; '-' too)")
    p.add_argument("-o", "--output", help="output file (default: stdout)")
    p.add_argument("--max-output-size", type=int, default=64 << 20, metavar="BYTES",
                   help="refuse blobs that decode to more bytes (default: 64 MiB)")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser(
        "inspect", help="show a blob's header (checksum verified)", formatter_class=fmt,
        description="Print the header of a blob (format, encoder, fidelity, kind, length, header size,\n"
                    "checksum, the fallback bit and which codec wrote the body) or a legacy blob's meta, as\n"
                    "text or --json. A v2 blob is decoded to check its content checksum (shown as unchecked\n"
                    "without its model or dictionary). A blob that fails its checksum shows its header with\n"
                    "checksum FAILED and exits 1.",
        epilog="example:\n  nbmf encode note.txt | nbmf inspect --json")
    p.add_argument("input", nargs="?", help="blob file (default: stdin; '-' too)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_inspect)
