"""One memory record, the same type through the data, bench and training paths.

A record is its raw bytes, what they are (``kind``, ``fidelity``: the ``nbmf.blob`` enums) and where
they came from. The raw bytes are what the codec codes and what every size is measured on; they are
``nbmf.payload.to_raw`` of the record's payload, and ``from_corpus`` is the one function that turns a
corpus object ``{"id", "type", "domain", "data", "metadata": {"source"}}`` into a Record. The
spellings "text" / "lossless" exist only at the edges (Parquet columns, JSON, HTTP): ``Kind.of`` and
``.label`` convert, and ``Record.from_row`` reads a row whose columns use either spelling.

>>> r = from_corpus({"id": "m1", "data": {"role": "user", "text": "hé"}})
>>> r.raw, r.kind, r.fidelity.label, r.type, r.group
(b'{"role": "user", "text": "h\\xc3\\xa9"}', <Kind.JSON: 1>, 'lossless', 'structured', 'm1')
>>> Record.from_row({"id": "m1", "raw": b"hi", "kind": "text", "fidelity": "semantic"}).fidelity
<Fidelity.SEMANTIC: 1>
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from nbmf.blob import Fidelity, Kind
from nbmf.payload import to_raw

TYPES = ("conversation", "document", "structured")


@dataclass(frozen=True, kw_only=True)
class Record:
    id: str
    raw: bytes  # nbmf.payload.to_raw of the payload: what the codec codes
    kind: Kind  # a spelling ("json") or integer id is converted on construction
    fidelity: Fidelity = Fidelity.LOSSLESS  # semantic: raw is a canonical form (or a legacy preview)
    type: str = ""  # conversation | document | structured (bench rows are per type)
    group: str = ""  # unit of the train/val/test split: records of one group never straddle splits; "" = id
    domain: str = "general"
    source: str = ""  # file stem, l2:<store name>, or service:<memory-service store directory name>
    origin: str = ""  # file:line or l2:id, for messages
    truncated: bool = False  # a semantic legacy preview shorter than the original

    def __post_init__(self):
        object.__setattr__(self, "kind", Kind.of(self.kind))
        object.__setattr__(self, "fidelity", Fidelity.of(self.fidelity))
        if not isinstance(self.raw, bytes):
            object.__setattr__(self, "raw", bytes(self.raw))
        if not self.group:
            object.__setattr__(self, "group", self.id)

    @classmethod
    def from_row(cls, row: Mapping) -> Record:
        """A Record from a table row (Parquet, Arrow, a dict): the fields it has; kind and fidelity in either
        spelling ("json" or 1)."""
        return cls(**{f: row[f] for f in FIELDS if f in row})


FIELDS = tuple(f.name for f in dataclasses.fields(Record))


def infer_type(data) -> str:
    """The record type of a payload that does not name one."""
    if isinstance(data, str):
        return "document"
    if isinstance(data, dict) and isinstance(data.get("messages"), list):
        return "conversation"
    return "structured"


def from_corpus(obj, *, origin: str = "", source: str = "", group: str | None = None) -> Record:
    """The Record of a corpus object; raw bytes and kind from ``nbmf.payload.to_raw(obj["data"])``.

    ``id`` missing or empty: ``origin``. ``type`` missing: inferred from the data. ``group`` None or
    empty: the id. ``source``: the object's ``metadata.source``, else this default. Raises ValueError for
    anything but a JSON object with a ``data`` field.
    """
    if not isinstance(obj, dict) or "data" not in obj:
        raise ValueError("not a corpus record: a JSON object with a 'data' field is required")
    data = obj["data"]
    raw, kind = to_raw(data)
    rid = obj.get("id")
    rid = str(rid) if rid not in (None, "") else origin
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return Record(
        id=rid,
        raw=raw,
        kind=kind,
        type=str(obj.get("type") or infer_type(data)),
        group=str(group) if group not in (None, "") else rid,
        domain=str(obj.get("domain") or "general"),
        source=str(meta.get("source") or source),
        origin=origin,
    )
