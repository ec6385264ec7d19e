"""Record sources for `nbmf collect`: corpus JSONL, JSON arrays, text/markdown, directories, L2, and the memory
service's warm tier (``nbmf.data.service``).

Every source is a generator of `nbmf.record.Record` (one memory record; corpus objects become records
through `nbmf.record.from_corpus`) and `BadLine` (something that could not be read: counted and
reported, never fatal). Files are read incrementally, so an input of any size streams through in
bounded memory.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nbmf.blob import Fidelity, Kind
from nbmf.codecs import legacy
from nbmf.payload import canonical, to_raw
from nbmf.record import TYPES, Record, from_corpus, infer_type

FILE_SUFFIXES = (".jsonl", ".json", ".txt", ".md")
L2_PREFIX = "l2://"
SERVICE_PREFIX = "service://"  # forces the memory service's layout; a directory in that layout is found without it

Progress = Callable[[int], None]  # called with the number of bytes (or rows) just consumed


@dataclass(frozen=True)
class BadLine:
    origin: str
    reason: str


@dataclass(frozen=True)
class SourceOptions:
    group_key: str = "id"  # dotted path into a JSON record; falls back to the record id
    chunk_bytes: int = 2048  # target UTF-8 bytes of a .txt/.md chunk
    max_element_bytes: int = 64 << 20  # a JSON array element larger than this is reported bad
    class_fidelity: tuple[tuple[str, str], ...] = ()  # memory-service class -> fidelity, over its policy


def _dotted(obj, path: str):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def record_from_json(obj, origin: str, default_source: str, opts: SourceOptions) -> Record | BadLine:
    """A corpus-format record ({"id", "domain", "type", "data", "metadata": {"source"}}) -> Record."""
    group = _dotted(obj, opts.group_key) if opts.group_key != "id" and isinstance(obj, dict) else None
    try:
        rec = from_corpus(obj, origin=origin, source=default_source, group=group)
    except ValueError as e:  # not a corpus record, or a payload nbmf.payload refuses (PayloadError)
        return BadLine(origin, str(e))
    except Exception as e:  # anything else forming this one record (e.g. RecursionError) is still its own failure
        return BadLine(origin, f"{type(e).__name__}: {e}")
    if rec.type not in TYPES:
        return BadLine(origin, f"unknown record type {rec.type!r}; expected one of {', '.join(TYPES)}")
    return rec


def iter_jsonl(path: Path, opts: SourceOptions, progress: Progress) -> Iterator[Record | BadLine]:
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            progress(len(line))
            origin = f"{path}:{lineno}"
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield BadLine(origin, f"invalid UTF-8 at byte {e.start}")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                yield BadLine(origin, f"invalid JSON: {e.msg} at column {e.colno}")
                continue
            except (ValueError, RecursionError) as e:  # valid JSON Python will not build: too deep, too long a number
                yield BadLine(origin, f"unreadable JSON: {type(e).__name__}: {e}")
                continue
            yield record_from_json(obj, origin, path.stem, opts)


def iter_json_array(path: Path, opts: SourceOptions, progress: Progress,
                    chunk_chars: int = 1 << 20) -> Iterator[Record | BadLine]:
    """Stream the elements of a top-level JSON array without loading the file.

    Elements are parsed with JSONDecoder.raw_decode from a sliding buffer; an element that ends
    exactly at the buffer end is re-parsed after more input arrives (a number may continue). A
    syntax error cannot be resynchronised inside an array, so it ends the file (one BadLine)."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")("strict")
    f = open(path, "rb")
    buf, pos, base_line, eof, index = "", 0, 1, False, 0

    def fill() -> None:
        nonlocal buf, pos, base_line, eof
        chunk = f.read(chunk_chars)
        progress(len(chunk))
        eof = not chunk
        base_line += buf.count("\n", 0, pos)
        buf = buf[pos:] + utf8.decode(chunk, final=eof)
        pos = 0

    def skip_ws() -> None:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n\ufeff":
                pos += 1
            if pos < len(buf) or eof:
                return
            fill()

    def here() -> str:
        return f"{path}:{base_line + buf.count(chr(10), 0, pos)}"

    try:
        with f:
            skip_ws()
            if buf[pos:pos + 1] != "[":
                yield BadLine(here(), "invalid JSON array: the file must start with '['")
                return
            pos += 1
            skip_ws()
            if buf[pos:pos + 1] == "]":
                return
            while True:
                skip_ws()
                while True:
                    try:
                        obj, end = decoder.raw_decode(buf, pos)
                        if end < len(buf) or eof:
                            break
                    except json.JSONDecodeError as e:
                        if eof or len(buf) - pos > opts.max_element_bytes:
                            yield BadLine(here(), f"invalid JSON in array element {index}: {e.msg}; "
                                                  "rest of file skipped")
                            return
                    except (ValueError, RecursionError) as e:  # too deep / too long a number: more input won't help
                        yield BadLine(here(), f"unreadable JSON in array element {index}: {type(e).__name__}: {e}; "
                                              "rest of file skipped")
                        return
                    fill()
                origin = here()
                pos = end
                yield record_from_json(obj, origin, path.stem, opts)
                index += 1
                skip_ws()
                c = buf[pos:pos + 1]
                pos += 1
                if c == "]":
                    skip_ws()
                    if pos < len(buf):
                        yield BadLine(here(), "invalid JSON array: data after the closing ']'")
                    return
                if c != ",":
                    yield BadLine(here(), f"invalid JSON array: expected ',' or ']' after element {index - 1}")
                    return
    except UnicodeDecodeError as e:
        yield BadLine(here(), f"invalid UTF-8 ({e.reason}); rest of file skipped")


def _paragraphs(path: Path, progress: Progress, bad: list[BadLine]) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) per paragraph: maximal runs of non-blank lines."""
    para: list[str] = []
    start = 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            progress(len(line))
            try:
                text = line.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                bad.append(BadLine(f"{path}:{lineno}", f"invalid UTF-8 at byte {e.start}; line skipped"))
                continue
            if text.strip():
                if not para:
                    start = lineno
                para.append(text)
            elif para:
                yield start, para
                para = []
    if para:
        yield start, para


def chunk_text(paragraphs: Iterator[tuple[int, list[str]]], target: int) -> Iterator[tuple[int, str]]:
    """Greedy chunks of whole paragraphs toward `target` UTF-8 bytes; a paragraph over 2x the
    target is cut at line boundaries instead (a line is never cut)."""
    def pieces():
        for start, lines in paragraphs:
            if sum(len(line.encode()) + 1 for line in lines) <= 2 * target:
                yield start, "\n".join(lines)
                continue
            acc, size, first = [], 0, start
            for i, line in enumerate(lines):
                n = len(line.encode()) + 1
                if acc and size + n > target:
                    yield first, "\n".join(acc)
                    acc, size, first = [], 0, start + i
                acc.append(line)
                size += n
            if acc:
                yield first, "\n".join(acc)

    chunk: list[str] = []
    size, first = 0, 0
    for start, piece in pieces():
        n = len(piece.encode())
        if chunk and size + 2 + n > target:
            yield first, "\n\n".join(chunk)
            chunk, size = [], 0
        if not chunk:
            first = start
        chunk.append(piece)
        size += n + (2 if len(chunk) > 1 else 0)
    if chunk:
        yield first, "\n\n".join(chunk)


def iter_text(path: Path, rel: str, source: str, opts: SourceOptions,
              progress: Progress) -> Iterator[Record | BadLine]:
    """.txt/.md -> document records; the file is the group (a document never spans splits)."""
    bad: list[BadLine] = []
    for i, (line, text) in enumerate(chunk_text(_paragraphs(path, progress, bad), opts.chunk_bytes)):
        yield from bad
        bad.clear()
        raw, kind = to_raw(text)
        yield Record(id=f"{rel}#{i}", group=rel, type="document", domain="general", source=source,
                     kind=kind, raw=raw, origin=f"{path}:{line}")
    yield from bad


def iter_l2(path: str, progress: Progress, registry=None) -> Iterator[Record | BadLine]:
    """Decode every blob of an SQLite L2 store through the codec registry (legacy included).

    A row's own failure is that row's BadLine ("ErrorClass: message"), never the end of the scan: a blob
    column that is not bytes, or any exception while decoding the blob or forming its record (the typed
    NBMFError family, and whatever the JSON and number parsing under it raise, e.g. RecursionError for
    deep nesting or ValueError for a 5,000-digit integer). The try holds only work on that row's bytes;
    an error of the store itself (locked, unreadable) is raised by ``store.iter`` outside it and ends
    the run. A legacy preview cut at 2048 characters comes out as a Record with ``truncated`` set, for
    the caller to skip and count.
    """
    from nbmf.data.store import SQLiteL2Store
    from nbmf.registry import Registry

    reg = registry or Registry.default()
    source = f"l2:{Path(path).name}"
    with SQLiteL2Store(path, read_only=True) as store:
        for row in store.iter():
            progress(1)
            origin = f"l2:{row.id}"
            if not isinstance(row.blob, bytes):
                yield BadLine(origin, f"TypeError: the blob column holds {type(row.blob).__name__}, not bytes "
                                      "(a row another tool wrote); rewrite or delete the row")
                continue
            try:
                item = l2_record(row, reg.decode_result(row.blob), source)
            except Exception as e:  # one row's failure, whatever its type (see the docstring)
                item = BadLine(origin, f"{type(e).__name__}: {e}")
            yield item


def l2_record(row, res, source: str) -> Record:
    """The Record of an L2 row and its ``DecodeResult``; raw bytes through ``nbmf.payload``.

    Lossless: ``to_raw`` of the payload. Semantic: ``canonical`` of those raw bytes, the one semantic form,
    so a semantic JSON value is its compact sorted JSON text with kind json. A legacy semantic preview is
    a str even for JSON; a whole one is canonicalized as JSON when its blob's ``meta.type`` names a JSON
    value, as text otherwise. A cut preview is returned as decoded, flagged ``truncated``.
    """
    kind = res.kind
    raw = to_raw(res.payload, kind)[0]
    if res.fidelity == Fidelity.SEMANTIC and not res.truncated:
        if res.legacy and legacy.holds_json(legacy.parse(row.blob)):
            kind = Kind.JSON  # the preview is the JSON text itself: parse it, do not quote it
        raw = canonical(raw, kind)
    rtype = row.record_class if row.record_class in TYPES else infer_type(res.payload)
    return Record(id=row.id, group=row.id, type=rtype, domain=row.domain or "general", source=source,
                  kind=kind, fidelity=res.fidelity, raw=raw, origin=f"l2:{row.id}", truncated=res.truncated)


@dataclass(frozen=True)
class Source:
    """One command-line source: a file, a directory, an L2 store or a memory-service store."""

    spec: str

    @property
    def is_l2(self) -> bool:
        return self.spec.startswith(L2_PREFIX)

    @property
    def is_service(self) -> bool:
        """Named service://, or a directory in the memory service's warm-tier layout."""
        from nbmf.data import service

        return self.spec.startswith(SERVICE_PREFIX) or (not self.is_l2 and service.is_store(self.path))

    @property
    def path(self) -> Path:
        for prefix in (L2_PREFIX, SERVICE_PREFIX):
            if self.spec.startswith(prefix):
                return Path(self.spec[len(prefix):])
        return Path(self.spec)

    def check(self) -> None:
        """Raise FileNotFoundError / ValueError for a source that cannot be read at all."""
        p = self.path
        if not p.exists():
            raise FileNotFoundError(f"source {self.spec} does not exist")
        if self.spec.startswith(SERVICE_PREFIX) and not (p / "records").is_dir():
            raise ValueError(f"source {self.spec}: no records/ directory; a memory-service store is the directory "
                             "that holds records/ (and blobs/)")
        if not self.is_l2 and p.is_file() and p.suffix.lower() not in FILE_SUFFIXES:
            raise ValueError(f"source {self.spec}: unsupported file type {p.suffix!r}; "
                             f"use {', '.join(FILE_SUFFIXES)}, a directory, or l2:///path/to/store.sqlite")

    def files(self) -> list[Path]:
        p = self.path
        if self.is_service:
            from nbmf.data import service

            return service.record_files(p)
        if p.is_file():
            return [p]
        out = []
        for root, dirs, names in os.walk(p):
            dirs.sort()
            out += [Path(root) / n for n in sorted(names) if Path(n).suffix.lower() in FILE_SUFFIXES]
        return out

    def total(self) -> int:
        """Progress total: bytes of input files, or rows of an L2 store."""
        if self.is_l2:
            from nbmf.data.store import SQLiteL2Store

            with SQLiteL2Store(self.path, read_only=True) as store:
                return store.count()
        return sum(f.stat().st_size for f in self.files())

    def iter(self, opts: SourceOptions, progress: Progress, registry=None) -> Iterator[Record | BadLine]:
        if self.is_l2:
            yield from iter_l2(str(self.path), progress, registry)
            return
        if self.is_service:
            from nbmf.data import service

            yield from service.iter_store(self.path, progress, dict(opts.class_fidelity))
            return
        base = self.path if self.path.is_dir() else self.path.parent
        name = self.path.stem if self.path.is_file() else self.path.name
        for f in self.files():
            suffix = f.suffix.lower()
            if suffix == ".jsonl":
                yield from iter_jsonl(f, opts, progress)
            elif suffix == ".json":
                yield from iter_json_array(f, opts, progress)
            else:
                yield from iter_text(f, f.relative_to(base).as_posix(), name, opts, progress)
