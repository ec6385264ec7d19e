"""Encoder versions -> codecs. Encode with a domain's version, the current one or a named one; decode routes by
the blob.

Neural versions live in a model registry directory (``vN/`` artifact dirs, a ``CURRENT`` file naming the default
and ``DOMAINS.json`` naming the version of each domain that has its own: nbmf/modeldir.py) and load lazily on
first use, so a replica that only ever decodes stub blobs never loads a model. A record of a domain with no version
of its own is encoded with the default; a blob decodes with the version its header names, whatever its domain.
Encoding with version N writes each record with the smallest of three verified bodies: N's neural coder,
N's classical fallback (zstd-19 with the dictionary shipped in N's artifact; the header's fallback bit says so)
and the stub (zlib-9; encoder id 0), so no record is stored larger than zstd with the dictionary would store
it, plus the header. Every record not written by the neural coder is counted in ``stats`` with the reason.

>>> reg = Registry()
>>> blob = reg.encode({"role": "user", "content": "hi"})
>>> reg.decode(blob)
{'role': 'user', 'content': 'hi'}
>>> reg.inspect(blob).version
'stub'
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from nbmf import blob as blobfmt
from nbmf import modeldir
from nbmf.blob import LEGACY, Fidelity, Kind
from nbmf.codecs import legacy
from nbmf.codecs.stub import StubCodec
from nbmf.errors import ArtifactError, CorruptBlobError, NBMFError, OutputTooLargeError, UnknownVersionError
from nbmf.modeldir import default_model_dir, version_id, version_name
from nbmf.payload import canonical, from_raw, to_raw

DEFAULT_MAX_OUTPUT = 64 << 20  # bytes: the decompression-bomb guard
NEURAL_MAX_BYTES = 64 << 10  # records larger than this skip the model for the classical codecs: the model sees
# 128 tokens of context, so a long record gains little over its first 64 KiB, and coding one costs ~4 ms per KiB
_RANK = {"stub": 0, "fallback": 1, "neural": 2}  # equal sizes: the cheaper decode (the stub needs no artifact)


@dataclass(frozen=True)
class DecodeResult:
    payload: object
    kind: Kind
    fidelity: Fidelity
    version: str  # "stub", "vN" or "legacy" (names: nbmf.modeldir)
    truncated: bool = False  # legacy semantic previews cut at 2048 characters
    legacy: bool = False
    # the exact bytes the body decoded to (the content its checksum covers); None for legacy blobs
    raw: bytes | None = field(default=None, repr=False, compare=False)


@dataclass
class Stats:
    encodes: Counter = field(default_factory=Counter)  # blobs written, by codec: "stub", "vN", "vN:fallback"
    # records of version N not written by its neural coder, by why: "vN:larger" (another body was smaller),
    # "vN:large" (over neural_max_bytes), "vN:mismatch", "vN:error", "vN:unavailable" (the model did not load)
    fallbacks: Counter = field(default_factory=Counter)
    decodes: Counter = field(default_factory=Counter)  # by codec, as encodes

    def as_dict(self) -> dict:
        return {"encodes": dict(self.encodes), "fallbacks": dict(self.fallbacks), "decodes": dict(self.decodes)}


class Registry:
    def __init__(self, model_dir: str | Path | None = None, current: str | None = None, verify: str = "codec",
                 neural_max_bytes: int = NEURAL_MAX_BYTES, domains: dict[str, str] | None = None,
                 threads: int | None = None):
        """``verify``: "codec" trusts the encode-time check of codecs that declare ``self_verifying`` (the
        neural codec decodes every body with the range decoder against its tables) and fully decodes the
        bodies of every other codec; "full" fully decodes every non-stub body (about twice the encode time).
        ``neural_max_bytes``: larger records skip the model for the classical codecs (counted as "vN:large").
        ``current`` / ``domains``: the default version and domain -> version; None: the model directory's
        CURRENT / DOMAINS.json (read once, here). ``threads``: worker threads of each neural codec it loads
        (None: ``nbmf.codecs.neural.default_threads``); the bytes are the same at any count."""
        if verify not in ("codec", "full"):
            raise ValueError(f"verify is 'codec' or 'full', not {verify!r}")
        self.verify = verify
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self.neural_max_bytes = int(neural_max_bytes)
        self.stub = StubCodec()
        self._codecs: dict[int, object] = {0: self.stub}
        self._fallbacks: dict[int, object] = {}  # encoder id -> FallbackCodec, or None: its artifact has no dictionary
        self._lock = threading.Lock()
        self.stats = Stats()
        self.model_dir = Path(model_dir) if model_dir else None
        self._paths: dict[int, Path] = modeldir.version_dirs(self.model_dir)
        if current is None:
            current = modeldir.current(self.model_dir)  # a CURRENT naming a version not held raises
        self.current = current or "stub"
        self.domains: dict[str, str] = dict(modeldir.domain_versions(self.model_dir) if domains is None else domains)
        for d in self.domains:
            modeldir.check_domain(d)
        for what, name in [("current version", self.current)] + [(f"domain {d!r}'s version", v)
                                                                  for d, v in self.domains.items()]:
            if version_id(name) not in self._codecs and version_id(name) not in self._paths:
                raise UnknownVersionError(f"{what} {name!r} is not in {self.model_dir}; it holds {self.versions()}")

    @classmethod
    def from_dir(cls, model_dir, current: str | None = None) -> "Registry":
        return cls(model_dir, current)

    @classmethod
    def default(cls) -> "Registry":
        """Stub + every version in the default model directory (``nbmf.modeldir.default_model_dir``).

        Without a CURRENT there, encode writes stub blobs: a NoModelWarning says so once, and where to
        put a model.
        """
        d = default_model_dir()
        modeldir.warn_if_no_model(d)
        return cls(d)

    def register(self, codec, make_current: bool = False, domain: str | None = None) -> None:
        """Hold ``codec`` (in memory; ``nbmf.modeldir.register`` puts an artifact on disk); ``make_current``
        makes it the default, or with ``domain`` that domain's version."""
        self._codecs[codec.encoder_id] = codec
        self._fallbacks.pop(codec.encoder_id, None)  # the new codec's artifact may ship another dictionary
        if make_current and domain is not None:
            self.domains[modeldir.check_domain(domain)] = codec.name
        elif make_current:
            self.current = codec.name

    def version_for(self, domain: str | None = None) -> str:
        """The version records of ``domain`` are encoded with: its own, else the default (``current``)."""
        return self.current if domain is None else self.domains.get(modeldir.check_domain(domain), self.current)

    def versions(self) -> list[str]:
        return [version_name(i) for i in sorted(set(self._codecs) | set(self._paths))]

    def codec(self, version: str | int):
        """The codec of a version name or encoder id, loading its artifact on first use."""
        i = version if isinstance(version, int) else version_id(version)
        c = self._codecs.get(i)
        if c is not None:
            return c
        if i not in self._paths:
            raise UnknownVersionError(f"blob was written by encoder {version_name(i)}; this registry holds "
                                      f"{', '.join(self.versions())}: add that version's artifact to "
                                      f"{self.model_dir or 'a model registry directory (Registry(model_dir))'}")
        with self._lock:
            if i not in self._codecs:
                from nbmf.codecs.neural import load_codec

                codec = load_codec(self._paths[i], threads=self.threads)
                if codec.encoder_id != i:  # a codec names itself from its manifest: it must be the one asked for
                    raise ArtifactError(f"{self._paths[i]} holds an artifact of version {codec.name}, not "
                                        f"{version_name(i)}: put each version in its own vN directory")
                self._codecs[i] = codec
            return self._codecs[i]

    def fallback(self, version: str | int):
        """The classical fallback codec of a neural version (``nbmf.codecs.fallback``: zstd with the dictionary its
        artifact ships), loaded once, without loading the model; None for the stub and for an artifact exported
        before the fallback existed. It comes from the artifact of the version's codec when that was loaded from
        one (``register``), else from the version's directory."""
        i = version if isinstance(version, int) else version_id(version)
        if i in self._fallbacks:
            return self._fallbacks[i]
        if i == 0:
            return None
        codec = self._codecs.get(i)
        path, manifest = getattr(codec, "path", None), getattr(codec, "manifest", None)
        if path is None:
            if i not in self._paths:
                self.codec(i)  # raises UnknownVersionError, naming the versions held
                return None  # a registered codec of no artifact: no dictionary
            path, manifest = self._paths[i], None
        with self._lock:
            if i not in self._fallbacks:
                from nbmf.codecs.fallback import load

                fb = load(path, manifest)
                if fb is not None and fb.encoder_id != i:
                    raise ArtifactError(f"{path} holds an artifact of version {fb.version}, not {version_name(i)}: "
                                        "put each version in its own vN directory")
                self._fallbacks[i] = fb
            return self._fallbacks[i]

    def _fallback_decoder(self, encoder_id: int):
        fb = self.fallback(encoder_id)
        if fb is None:
            from nbmf.artifact import DICTIONARY

            where = getattr(self._codecs.get(encoder_id), "path", None) or self._paths.get(encoder_id)
            name = version_name(encoder_id)
            raise UnknownVersionError(f"blob was written by the classical fallback of encoder {name} (zstd with the "
                                      f"dictionary {name}'s artifact ships), but this registry's {name} artifact "
                                      f"({where}) has no {DICTIONARY}: it predates the fallback; install {name}'s "
                                      "current release, which ships it")
        return fb

    # -- encode ---------------------------------------------------------------------------------
    def encode(self, payload, fidelity="lossless", version: str | None = None, kind=None,
               domain: str | None = None) -> bytes:
        return self.encode_many([payload], fidelity=fidelity, version=version, kinds=[kind], domain=domain)[0]

    def encode_many(self, payloads, fidelity="lossless", version: str | None = None, kinds=None,
                    domain: str | None = None) -> list[bytes]:
        """Blobs of ``payloads``, written with ``version`` if named, else with ``domain``'s version
        (``version_for``). A named version that cannot load raises; when the domain's (or the default) version
        cannot load, the classical codecs write the records (a NoModelWarning once; counted as "vN:unavailable")."""
        fid = Fidelity.of(fidelity)
        kinds = kinds or [None] * len(payloads)
        raws = [to_raw(p, k) for p, k in zip(payloads, kinds)]
        if fid == Fidelity.SEMANTIC:
            raws = [(canonical(raw, kind), kind) for raw, kind in raws]
        target = version or self.version_for(domain)
        try:
            codec = self.codec(target)
        except NBMFError as e:
            if version is not None:
                raise  # an explicitly requested version that cannot load is the caller's error
            codec = None  # the current model cannot load: writes go on with the classical codecs, counted
            whose = "the current version" if domain is None else f"domain {domain!r}'s version"
            modeldir.warn_once(f"unavailable:{self.model_dir}/{target}",
                               f"nbmf: {whose} {target} cannot load ({e}); encode writes stub "
                               "(or zstd fallback) blobs until it can (counted in Registry.stats.fallbacks)")
        # (codec, is the fallback, body) of each record: the stub's unless a smaller verified body comes along
        picks = [(self.stub, False, b) for b in self.stub.encode_many(raws)]
        eid = version_id(target)
        if eid != 0:
            name = version_name(eid)
            cand, reasons = self._neural_bodies(codec, raws, int(fid))
            fb, fb_bodies = self._fallback_bodies(eid, raws)
            for j, (pick, n, f) in enumerate(zip(picks, cand, fb_bodies)):
                options = [(len(pick[2]), _RANK["stub"], pick)]
                if f is not None:
                    options.append((len(f), _RANK["fallback"], (fb, True, f)))
                if n is not None:
                    options.append((len(n), _RANK["neural"], (codec, False, n)))
                picks[j] = min(options, key=lambda o: o[:2])[2]
                if picks[j][0] is not codec:
                    self.stats.fallbacks[f"{name}:{reasons[j] or 'larger'}"] += 1
        out = []
        for (raw, kind), (c, is_fallback, body) in zip(raws, picks):
            self.stats.encodes[c.name] += 1
            out.append(blobfmt.pack_v2(encoder_id=c.encoder_id, fidelity=fid, kind=kind, content=raw, body=body,
                                       fingerprint=c.fingerprint, fallback=is_fallback))
        return out

    def _neural_bodies(self, codec, raws, fid: int) -> tuple[list, list]:
        """(verified neural body or None, why not) per record; any failure of the model is a reason, not an error."""
        if codec is None:
            return [None] * len(raws), ["unavailable"] * len(raws)
        small = [j for j, (raw, _) in enumerate(raws) if len(raw) <= self.neural_max_bytes]
        cand: list = [None] * len(raws)
        reasons: list = ["large"] * len(raws)
        try:
            part = codec.encode_many([raws[j] for j in small], fidelity=fid, verify=True)
            for j, b in zip(small, part):
                cand[j], reasons[j] = b, (None if b is not None else "mismatch")
            if self.verify == "full" or not getattr(codec, "self_verifying", False):
                self._decode_check(codec, raws, cand, reasons, fid)
                cand = [None if r else b for b, r in zip(cand, reasons)]
        except Exception:  # any failure of the model falls back to the classical codecs, never to an error
            for j in small:
                cand[j], reasons[j] = None, "error"
        return cand, reasons

    def _fallback_bodies(self, encoder_id: int, raws) -> tuple[object, list]:
        """(fallback codec, verified body or None per record); no bodies without a dictionary or when it fails."""
        try:
            fb = self.fallback(encoder_id)
            if fb is not None:
                return fb, fb.encode_many(raws, verify=True)
        except Exception as e:  # an artifact that cannot give its dictionary: the stub stays, as for a failed model
            modeldir.warn_once(f"fallback:{self.model_dir}/{encoder_id}",
                               f"nbmf: the zstd fallback of {version_name(encoder_id)} cannot be used ({e}); "
                               "encode leaves it out until it can")
        return None, [None] * len(raws)

    @staticmethod
    def _decode_check(codec, raws, cand, reasons, fid: int) -> None:
        """Decode every candidate body with the codec's own decoder; a body that does not give back its
        record (or does not decode) is marked a mismatch."""
        idx = [j for j, b in enumerate(cand) if b is not None]
        items = [(cand[j], raws[j][1], len(raws[j][0])) for j in idx]
        try:
            outs = codec.decode_many(items, fidelity=fid)
        except Exception:
            outs = []
            for item in items:
                try:
                    outs.append(codec.decode_many([item], fidelity=fid)[0])
                except Exception:
                    outs.append(None)
        for j, out in zip(idx, outs):
            if out != raws[j][0]:
                reasons[j] = "mismatch"

    # -- decode ---------------------------------------------------------------------------------
    def decode(self, blob, max_output_size: int = DEFAULT_MAX_OUTPUT):
        return self.decode_result(blob, max_output_size).payload

    def decode_result(self, blob, max_output_size: int = DEFAULT_MAX_OUTPUT) -> DecodeResult:
        return self.decode_many([blob], max_output_size)[0]

    def decode_many(self, blobs, max_output_size: int = DEFAULT_MAX_OUTPUT) -> list[DecodeResult]:
        """Decode any mix of v2, v1 and legacy blobs; the blobs of each codec (a version's neural coder, its
        fallback, the stub) decode as one batch.

        A v2 blob's content must match its checksum under this registry's codec for its version (a damaged
        blob, or another model or dictionary under the same version name, is CorruptBlobError, never a wrong
        payload). A fallback blob needs only the version's dictionary, never its model."""
        results: list[DecodeResult | None] = [None] * len(blobs)
        groups: dict[tuple[int, bool], list] = {}
        for j, b in enumerate(blobs):
            b = as_blob(b)
            if isinstance(b, dict):  # a legacy stub blob
                d = legacy.decode(b, max_output_size)
                semantic_text = isinstance(d.payload, str) and d.fidelity == "semantic"
                kind = Kind.TEXT if semantic_text else infer_legacy_kind(d.payload)
                results[j] = DecodeResult(d.payload, kind, Fidelity.of(d.fidelity), LEGACY, d.truncated, True)
                self.stats.decodes[LEGACY] += 1
                continue
            header, body = blobfmt.unpack(b)
            if header.original_length > max_output_size:
                raise OutputTooLargeError(f"blob decodes to {header.original_length} bytes, over max_output_size="
                                          f"{max_output_size}; raise the limit to read it")
            if header.fallback and header.encoder_id == 0:
                raise CorruptBlobError("blob has the fallback bit with encoder id 0, but the stub has no fallback "
                                       "codec: it was corrupted")
            groups.setdefault((header.encoder_id, header.fallback), []).append((j, header, body))
        for (eid, fallback), items in groups.items():
            codec = self._fallback_decoder(eid) if fallback else self.codec(eid)
            for fid in (Fidelity.LOSSLESS, Fidelity.SEMANTIC):
                part = [(j, h, b) for j, h, b in items if h.fidelity == fid]
                if not part:
                    continue
                raws = codec.decode_many([(b, h.kind, h.original_length) for _, h, b in part], fidelity=int(fid))
                for (j, h, _), raw in zip(part, raws):
                    if len(raw) != h.original_length:
                        raise CorruptBlobError(f"encoder {h.version} decoded {len(raw)} bytes, "
                                               f"header says {h.original_length}: the blob is damaged")
                    blobfmt.check_content(h, raw, codec.fingerprint)
                    results[j] = DecodeResult(from_raw(raw, h.kind), h.kind, h.fidelity, h.version, raw=raw)
                    self.stats.decodes[codec.name] += 1
        return results  # type: ignore[return-value]

    def inspect(self, blob) -> blobfmt.Header | dict:
        """The header (a v1 blob's checksum verified; a v2 blob's covers its content, checked by decode), or a
        description of a legacy blob."""
        b = as_blob(blob)
        if isinstance(b, dict):
            return {"format": "legacy", "meta": b["meta"], "code_bytes": legacy.code_bytes(b), "sig": b["sig"]}
        return blobfmt.unpack(b)[0]


def as_blob(blob):
    """What decode reads from any stored form: the blob bytes of a binary blob or of an envelope (a dict, or its
    JSON text or bytes), the legacy dict of an old stub blob (a dict, or its JSON text or bytes).

    A JSON object of neither structure, or an envelope with a bad field, is FormatError; an envelope whose v1
    checksum fails is CorruptBlobError (a v2 envelope's content checksum is checked when it is decoded).

    >>> import json
    >>> envelope = blobfmt.to_envelope(b := Registry().encode("hi"))
    >>> as_blob(envelope) == b == as_blob(json.dumps(envelope)) == as_blob(json.dumps(envelope).encode())
    True
    """
    obj = legacy.json_object(blob)
    if obj is None:
        return blob
    if blobfmt.is_envelope(obj):
        return blobfmt.from_envelope(obj)
    return legacy.check(obj)


def infer_legacy_kind(payload) -> Kind:
    return Kind.TEXT if isinstance(payload, str) else Kind.JSON


_default: Registry | None = None


def default_registry() -> Registry:
    global _default
    if _default is None:
        _default = Registry.default()
    return _default
