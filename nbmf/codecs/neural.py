"""The neural codec: the integer-runtime causal model drives a range coder, both in one compiled loop.

A record's raw bytes become BPE tokens; the model gives, token by token, an integer frequency table
for the next token; the range coder spends about -log2 p bits on each. Decoding replays the model
on the tokens it has decoded so far, so it needs the exact same tables: the integer runtime makes
them bit-identical on every machine, batch shape and thread count. The body is the coder's
32-bit words in the artifact's body layout (nbmf.runtime.layouts: big endian and the shortest seal since layout 2),
with trailing zero bytes dropped (the decoder reads zeros past the end).
Encode runs each record's positions through the model in one pass; decode runs records in lockstep.
Both split their records over ``threads`` worker threads (the kernels release the GIL); the bytes never
depend on the split. With ``device`` set (a torch device such as "cuda"), encode and decode run batched on it
through ``nbmf.runtime.torch_int`` instead: the same bytes, for bulk work on a GPU host.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from nbmf.blob import Kind
from nbmf.errors import ArtifactError, CorruptBlobError
from nbmf.runtime import coder, kernels, layouts, match


def default_threads(bulk: bool = False) -> int:
    """Threads a codec uses unless told: $NBMF_THREADS, else 1 (a Serve replica sets it to its CPUs), or with
    ``bulk`` (a migration: throughput over one call's latency) every CPU this process may run on."""
    if "NBMF_THREADS" not in os.environ and bulk:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        return max(1, int(os.environ.get("NBMF_THREADS", "1")))
    except ValueError:
        raise ValueError(f"NBMF_THREADS must be a positive integer, got {os.environ['NBMF_THREADS']!r}") from None


def default_device() -> str | None:
    """Torch device a codec runs on unless told: $NBMF_DEVICE (e.g. "cuda"), else None (numba on the CPU)."""
    return os.environ.get("NBMF_DEVICE") or None


def _groups(sizes: list[int], parts: int) -> list[list[int]]:
    """Indices of items split into at most ``parts`` groups of about equal total size (longest first, each to
    the lightest group); each group keeps its indices in order. Work per record grows with its size."""
    n = len(sizes)
    parts = max(1, min(parts, n))
    groups: list[list[int]] = [[] for _ in range(parts)]
    load = [0] * parts
    for i in sorted(range(n), key=lambda i: -sizes[i]):
        g = load.index(min(load))
        groups[g].append(i)
        load[g] += sizes[i] + 1
    return [sorted(g) for g in groups if g]


class NeuralCodec:
    """Encode/decode raw bytes with one model artifact. Holds the loaded model: reuse the object."""

    self_verifying = True  # encode_many(verify=True) checks each body against what it coded (see there)

    def __init__(self, name: str, cfg, int_model, tokenizer, manifest: dict | None = None, path: Path | None = None,
                 threads: int | None = None, device: str | None = None):
        from nbmf.artifact import encoder_id_of

        self.name = name
        self.encoder_id = encoder_id_of(name)
        self.cfg = cfg
        self.model = int_model
        self.tokenizer = tokenizer
        self.manifest = manifest or {}
        self.fingerprint = _fingerprint(cfg, int_model, tokenizer, self.manifest)
        self.path = path
        self.threads = default_threads() if threads is None else int(threads)
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.device = device
        self.runtime = int_model  # what encode_many/decode_many run: numba here, or the device's torch runtime
        if device is not None:
            from nbmf.runtime.torch_int import TorchIntModel  # torch only where a device is asked for

            self.runtime = TorchIntModel(int_model, device, host_threads=self.threads)  # threads help decode
        self._piece_len = tokenizer.piece_lengths().astype(np.int64)
        if self._piece_len.min(initial=1) < 1:
            raise ValueError("every token must stand for at least one byte (the decoder's stop condition)")
        # the largest probability a table can give one token: the best logit gets head_lut[0], every other
        # token at least head_lut's smallest entry (kernels.table); a match boost gives its token at most
        # hit / 2**15 (nbmf.runtime.match.boost) and lowers every other one. It bounds what a body can hold
        lut = np.asarray(int_model.params["head_lut"], np.float64)
        top = float(lut.max() / (lut.max() + (cfg.vocab_size - 1) * lut.min()))
        if int_model.match.conf[0]:
            top = max(top, float(int_model.match.hit.max()) / match.HIT_ONE)
        self._symbol_bits = coder.min_symbol_bits(top)
        self._max_piece = int(self._piece_len.max())
        self._pool: ThreadPoolExecutor | None = None  # made on first use with more than one group
        self._pool_size = 0
        self._pool_lock = threading.Lock()  # callers on several threads (Serve) make or replace one pool

    def __repr__(self) -> str:
        return f"NeuralCodec({self.name}, {self.cfg.family}, d={self.cfg.d_model}, layers={self.cfg.n_layers})"

    def max_tokens(self, body_size: int) -> int:
        """Most tokens a body of ``body_size`` bytes can decode to (``coder.max_symbols``)."""
        return coder.max_symbols(-(-int(body_size) // 4), self._symbol_bits)

    def max_length(self, body_size: int) -> int:
        """Most bytes a body of ``body_size`` bytes can decode to: a longer claimed length is refused unread."""
        return self.max_tokens(body_size) * self._max_piece

    def sequence(self, ids: np.ndarray, kind, fidelity) -> np.ndarray:
        """The model's input for a record's token ids: its condition token, then the ids."""
        from nbmf.models.config import sequence_for

        return sequence_for(ids, int(kind), int(fidelity), self.cfg)

    def _map(self, fn, sizes: list[int]) -> list:
        """fn(list of indices) over up to ``threads`` groups of balanced total size; results back in item order."""
        groups = _groups(sizes, 1 if self.device else self.threads)  # a device batches all records itself
        if len(groups) <= 1:
            return fn(list(range(len(sizes))))
        with self._pool_lock:
            if self._pool_size != self.threads:
                if self._pool is not None:
                    self._pool.shutdown(wait=False)  # its queued work still runs
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="nbmf-codec")
                self._pool_size = self.threads
            parts = self._pool.map(fn, groups)
        out: list = [None] * len(sizes)
        for group, part in zip(groups, parts):
            for i, x in zip(group, part):
                out[i] = x
        return out

    # -- encode ---------------------------------------------------------------------------------
    def encode_raw(self, raw: bytes, kind, fidelity=0) -> bytes:
        return self.encode_many([(raw, kind)], fidelity=fidelity)[0]

    def encode_many(self, items, fidelity=0, verify: bool = False) -> list[bytes | None]:
        """Bodies for [(raw, kind), ...]: each record's tables in one pass, coded in the same compiled loop.

        ``verify=True`` checks every body before returning it and returns None for one that does not give back
        its record: the range decoder must recover, from the body's words, each token's coded interval (so
        the token: intervals of distinct tokens are disjoint), and the tokens must detokenize to the record's
        bytes. The tables are the encode pass's own: while decoded tokens equal the encoded ones the prefixes
        are equal, and the integer runtime is a pure function of the prefix (bit-exact across processes,
        batches and threads: tests/nbmf/test_neural.py), so re-running the model would give the same integers.
        ``decode_raw`` remains the independent full decode.
        """
        raws = [bytes(raw) for raw, _ in items]
        ids = self.tokenizer.encode_batch(raws)
        seqs = [self.sequence(x, kind, fidelity)[:-1] for x, (_, kind) in zip(ids, items)]

        def run(group: list[int]) -> list[bytes | None]:
            words, ok = self.runtime.encode([seqs[i] for i in group], [ids[i] for i in group])
            out: list[bytes | None] = []
            for k, i in enumerate(group):
                if len(ids[i]) == 0:
                    out.append(b"" if len(raws[i]) == 0 else None)
                    continue
                body = layouts.body_of_words(words[k], self.model.body_layout)
                if coder.stripped_words(len(words[k]), body) >= coder.BODY_SLACK:
                    body = None  # a decoder would read too far past it (coder.BODY_SLACK): ~2**-64 of records
                elif verify and not (ok[k] and self.tokenizer.decode(ids[i]) == raws[i]):
                    body = None
                out.append(body)
            return out

        return self._map(run, [len(x) for x in ids])

    # -- decode ---------------------------------------------------------------------------------
    def decode_raw(self, body: bytes, kind, original_length: int, fidelity=0) -> bytes:
        return self.decode_many([(body, kind, original_length)], fidelity=fidelity)[0]

    def decode_many(self, items, fidelity=0) -> list[bytes]:
        """Raw bytes for [(body, kind, original_length), ...], decoded in lockstep (same bits as one by one).

        Work is bounded by the body: a claimed length the body cannot hold is refused before any work, and the
        decoder stops once it reads more than coder.BODY_SLACK words past the body."""
        caps = np.array([self.max_tokens(len(body)) for body, _, _ in items], np.int64)
        for (body, _, length), cap in zip(items, caps):
            if int(length) == 0 and body:
                raise CorruptBlobError("blob body has data but its header says the record is empty")
            if int(length) > int(cap) * self._max_piece:  # max_length
                raise CorruptBlobError(f"blob claims {int(length)} bytes, more than a {len(body)}-byte body can hold "
                                       f"under {self.name} (at most {int(cap) * self._max_piece}): it is corrupted "
                                       "or forged")
        first = np.array([self.cfg.special_token(int(kind), int(fidelity)) for _, kind, _ in items], np.int64)
        bodies = [layouts.words_of_body(body, self.model.body_layout) for body, _, _ in items]
        lengths = np.array([int(length) for _, _, length in items], np.int64)

        def run(group: list[int]) -> list[bytes]:
            tokens, status = self.runtime.decode(first[group], [bodies[i] for i in group], lengths[group],
                                               self._piece_len, caps[group])
            if (status == kernels.BAD_QUANTILE).any():
                raise CorruptBlobError("neural body cannot be decoded (it is no range-coder output under this "
                                       "model): the blob is corrupted")
            if (status == kernels.PAST_BODY).any():
                raise CorruptBlobError("neural body ends before its record does (the decoder ran past the body): "
                                       "the blob is corrupted or forged")
            if (status == kernels.PAST_LENGTH).any():
                raise CorruptBlobError("neural body decodes past the record's length: the blob is corrupted "
                                       "or was written by a different model")
            return [self.tokenizer.decode(t) for t in tokens]

        return self._map(run, [int(n) for n in lengths])

    def warm_up(self) -> None:
        """Compile, or load from numba's cache, every kernel a call can reach (the device path: its first steps),
        by encoding one record and decoding it back. A cold cache compiles for seconds (decode alone ~4 s on this
        2-core box): a server pays it here, before its first request, not inside one. ArtifactError if the record
        does not come back."""
        raw = 'warm-up record: numba compiles on first use. {"json": [1, 2.5, true]}'.encode()
        (body,) = self.encode_many([(raw, Kind.TEXT)])
        if body is None or self.decode_many([(body, Kind.TEXT, len(raw))]) != [raw]:
            raise ArtifactError(f"{self.name}: a warm-up record did not decode back to itself")

    # -- measurement ----------------------------------------------------------------------------
    def cross_entropy_bits(self, raw: bytes, kind, fidelity=0) -> float:
        """The model's code length for ``raw`` in bits (what the coder should come within ~1% of)."""
        x = self.tokenizer.encode(raw)
        if len(x) == 0:
            return 0.0
        f = self.model.frequencies(self.sequence(x, kind, fidelity)[:-1], x)
        p = f[np.arange(len(x)), x] / f.sum(axis=1)
        return float(-np.log2(p).sum())


def _fingerprint(cfg, int_model, tokenizer, manifest: dict) -> bytes:
    """The codec's identity: its artifact's fingerprint (nbmf.artifact), or for a model never exported, a sha256
    of its config, arrays and tokenizer (so two different in-memory models never share one)."""
    import dataclasses
    import hashlib

    from nbmf.artifact import fingerprint

    if manifest:
        return fingerprint(manifest)
    h = hashlib.sha256(b"nbmf unexported model\0" + repr(dataclasses.asdict(cfg)).encode())
    for name, array in sorted(int_model.storable().items()):
        h.update(name.encode() + str(array.dtype).encode() + repr(array.shape).encode() + array.tobytes())
    h.update(tokenizer.to_json().encode())
    return h.digest()


def load_codec(path, threads: int | None = None, device: str | None = None) -> NeuralCodec:
    """Load a verified artifact directory as a codec (numpy + numba only: no torch, unless a device is asked for).

    ``threads``: worker threads for encode_many/decode_many (default: ``default_threads()``); ``device``: a torch
    device to run them on instead, batched (default: ``default_device()``, so None: the CPU kernels).
    """
    from nbmf.artifact import load_artifact

    manifest, cfg, int_model, tokenizer = load_artifact(path)
    if device is None:
        device = default_device()
    return NeuralCodec(manifest["version"], cfg, int_model, tokenizer, manifest=manifest, path=Path(path),
                       threads=threads, device=device)
