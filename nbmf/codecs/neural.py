"""The neural codec: an integer-runtime causal model drives constriction's range coder.

A record's raw bytes become BPE tokens; the model gives, token by token, an integer frequency table
for the next token; the range coder spends about -log2 p bits on each. Decoding replays the model
on the tokens it has decoded so far, so it needs the exact same tables: the integer runtime makes
them bit-identical on every machine, batch shape and thread count. The body is the coder's
32-bit words, little endian, with trailing zero bytes dropped (the decoder pads them back).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nbmf.errors import CorruptBlobError

try:  # the range coder; a hard dependency of the neural codec only
    import constriction
except ImportError as e:  # pragma: no cover - constriction is a core dependency
    raise ImportError("the neural codec needs constriction: pip install constriction") from e

_FAMILY = constriction.stream.model.Categorical(perfect=False)


def _words(body: bytes) -> np.ndarray:
    pad = -len(body) % 4
    return np.frombuffer(bytes(body) + b"\0" * pad, dtype="<u4").astype(np.uint32)


def _body(words: np.ndarray) -> bytes:
    return words.astype("<u4").tobytes().rstrip(b"\0")


class NeuralCodec:
    """Encode/decode raw bytes with one model artifact. Holds the loaded model: reuse the object."""

    self_verifying = True  # encode_many(verify=True) decodes each body before returning it (see there)

    def __init__(self, name: str, cfg, int_model, tokenizer, manifest: dict | None = None, path: Path | None = None):
        from nbmf.artifact import encoder_id_of, manifest_id

        self.name = name
        self.encoder_id = encoder_id_of(name)
        self.cfg = cfg
        self.model = int_model
        self.tokenizer = tokenizer
        self.manifest = manifest or {}
        self.artifact_id = manifest_id(self.manifest) if manifest else ""
        self.path = path
        self._piece_len = tokenizer.piece_lengths()

    def __repr__(self) -> str:
        return f"NeuralCodec({self.name}, {self.cfg.family}, d={self.cfg.d_model}, layers={self.cfg.n_layers})"

    def _sequence(self, ids: np.ndarray, kind, fidelity) -> np.ndarray:
        from nbmf.models.config import sequence_for

        return sequence_for(ids, int(kind), int(fidelity), self.cfg)

    # -- encode ---------------------------------------------------------------------------------
    def encode_raw(self, raw: bytes, kind, fidelity=0) -> bytes:
        return self.encode_many([(raw, kind)], fidelity=fidelity)[0]

    def encode_many(self, items, fidelity=0, verify: bool = False) -> list[bytes | None]:
        """Bodies for [(raw, kind), ...]: one kernel call computes every record's tables.

        ``verify=True`` decodes every body once before returning it (range decoder and detokenizer
        against the model's tables for the decoded prefix) and returns None for a body that does not
        give back its record. The tables are the encode pass's own: while decoded tokens equal the
        encoded ones the prefixes are equal, and the integer runtime is a pure function of the prefix
        (bit-exact across processes, batches and threads: tests/nbmf/test_neural.py), so re-running the
        model would give the same integers. ``decode_raw`` remains the independent full decode.
        """
        ids = self.tokenizer.encode_batch([bytes(raw) for raw, _ in items])
        seqs = [self._sequence(x, kind, fidelity)[:-1] for x, (_, kind) in zip(ids, items)]
        lengths = [len(s) for s in seqs]
        state = self.model.new_state(len(items))
        tokens = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        slots = np.repeat(np.arange(len(items)), lengths)
        freqs = self.model.step(state, tokens, slots)
        out: list[bytes | None] = []
        start = 0
        for x, n, (raw, _) in zip(ids, lengths, items):
            if n == 0:
                out.append(b"" if len(raw) == 0 else None)
                continue
            table = freqs[start : start + n]
            start += n
            encoder = constriction.stream.queue.RangeEncoder()
            encoder.encode(x.astype(np.int32), _FAMILY, table)
            body = _body(encoder.get_compressed())
            if verify:
                back = constriction.stream.queue.RangeDecoder(_words(body)).decode(_FAMILY, table)
                if not np.array_equal(back, x) or self.tokenizer.decode(back) != bytes(raw):
                    body = None
            out.append(body)
        return out

    # -- decode ---------------------------------------------------------------------------------
    def decode_raw(self, body: bytes, kind, original_length: int, fidelity=0) -> bytes:
        return self.decode_many([(body, kind, original_length)], fidelity=fidelity)[0]

    def decode_many(self, items, fidelity=0) -> list[bytes]:
        """Raw bytes for [(body, kind, original_length), ...], decoded in lockstep (same bits as one by one)."""
        n = len(items)
        out: list[list[int]] = [[] for _ in range(n)]
        remaining = [int(length) for _, _, length in items]
        decoders = [constriction.stream.queue.RangeDecoder(_words(body)) for body, _, _ in items]
        state = self.model.new_state(n)
        tokens = np.array([self.cfg.special_token(int(kind), int(fidelity)) for _, kind, _ in items], np.int64)
        active = np.array([j for j in range(n) if remaining[j] > 0], dtype=np.int64)
        for j, (body, _, _) in enumerate(items):
            if remaining[j] == 0 and body:
                raise CorruptBlobError("blob body has data but its header says the record is empty")
        freq = np.empty((n, self.cfg.vocab_size), np.float64)
        piece_len = self._piece_len.tolist()
        while len(active):
            rows = freq[: len(active)]
            self.model.step(state, tokens[active], active, rows)
            for r, j in enumerate(active.tolist()):
                try:
                    t = int(decoders[j].decode(_FAMILY, rows[r : r + 1])[0])
                except Exception as e:  # the coder's own error on a body it cannot read
                    raise CorruptBlobError(f"neural body cannot be decoded ({e}): the blob is corrupted") from None
                out[j].append(t)
                tokens[j] = t
                left = remaining[j] - piece_len[t]
                if left < 0:
                    raise CorruptBlobError("neural body decodes past the record's length: the blob is corrupted "
                                           "or was written by a different model")
                remaining[j] = left
            if any(remaining[j] == 0 for j in active.tolist()):
                active = np.array([j for j in active.tolist() if remaining[j] > 0], dtype=np.int64)
        return [self.tokenizer.decode(ids) for ids in out]

    # -- measurement ----------------------------------------------------------------------------
    def cross_entropy_bits(self, raw: bytes, kind, fidelity=0) -> float:
        """The model's code length for ``raw`` in bits (what the coder should come within ~1% of)."""
        x = self.tokenizer.encode(raw)
        if len(x) == 0:
            return 0.0
        f = self.model.frequencies(self._sequence(x, kind, fidelity)[:-1])
        p = f[np.arange(len(x)), x] / f.sum(axis=1)
        return float(-np.log2(p).sum())


def load_codec(path) -> NeuralCodec:
    """Load a verified artifact directory as a codec (numpy + numba only: no torch)."""
    from nbmf.artifact import load_artifact

    manifest, cfg, int_model, tokenizer = load_artifact(path)
    return NeuralCodec(manifest["version"], cfg, int_model, tokenizer, manifest=manifest, path=Path(path))
