"""Byte-level BPE whose ids map back to the exact input bytes.

Training and encoding use Hugging Face ``tokenizers`` (byte-level BPE: all 256 bytes are in the
vocabulary, so any input is representable). Decoding never goes through ``tokenizers``: each id maps
to its byte string, so invalid UTF-8 and every byte sequence round-trip exactly. Input that is not
valid UTF-8 is coded one byte-token per byte.

>>> tok = Tokenizer.train([b"hello world", b"hello there"] * 50, vocab_size=300)
>>> raw = "hello, wörld \\U0001f600".encode()
>>> tok.decode(tok.encode(raw)) == raw
True
>>> tok.decode(tok.encode(b"\\xff\\xfe\\x00")) == b"\\xff\\xfe\\x00"
True
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

FILENAME = "tokenizer.json"
MAX_BYTES = 1 << 26  # tokenizer.json is read whole (v1's: 47 KB for 2,048 ids)


@lru_cache(maxsize=1)
def _byte_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in character for every byte (what ByteLevel BPE vocabularies hold)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            n += 1
    return chars


def _lossless_problems(hf) -> list[str]:
    """What would make ``hf`` encode bytes to ids that do not spell them: a normalizer or a prefix space changes
    the text, truncation drops ids, padding and added tokens add some, a subword prefix or suffix is part of a
    token's string but not of its bytes."""
    from tokenizers import models, pre_tokenizers

    if not isinstance(hf.model, models.BPE):
        return [f"its model is {type(hf.model).__name__}, not BPE"]
    problems = []
    if hf.model.continuing_subword_prefix or hf.model.end_of_word_suffix:
        problems.append("it marks subwords (continuing_subword_prefix / end_of_word_suffix)")
    pre = hf.pre_tokenizer
    if not isinstance(pre, pre_tokenizers.ByteLevel) or pre.add_prefix_space:
        problems.append(f"its pre-tokenizer is {pre}, not ByteLevel(add_prefix_space=False)")
    for what, value in (("normalizer", hf.normalizer), ("truncation", hf.truncation), ("padding", hf.padding)):
        if value is not None:
            problems.append(f"it has a {what}")
    if hf.get_added_tokens_decoder():
        problems.append("it has added tokens")
    return problems


class Tokenizer:
    """A trained byte-level BPE: ``encode(bytes) -> ids``, ``decode(ids) -> bytes``."""

    def __init__(self, hf_tokenizer):
        """Wrap a ``tokenizers.Tokenizer``; ValueError unless it is a byte-level BPE whose ids stand for exact
        byte strings (see ``_lossless_problems``): decoding maps ids to bytes without asking it."""
        problems = _lossless_problems(hf_tokenizer)
        if problems:
            raise ValueError("not a lossless byte-level BPE tokenizer: " + "; ".join(problems))
        self._hf = hf_tokenizer
        alphabet = _byte_alphabet()
        vocab = hf_tokenizer.get_vocab()
        self.vocab_size = len(vocab)
        if sorted(vocab.values()) != list(range(self.vocab_size)):
            raise ValueError("tokenizer ids must be dense 0..V-1")
        odd = [piece for piece in vocab if not piece or any(c not in alphabet for c in piece)]
        if odd:  # an empty piece would stall the decoder's byte count; another character stands for no byte
            raise ValueError(f"{len(odd)} tokens are not byte strings of the byte-level alphabet, e.g. {odd[0]!r:.40}")
        self._pieces: list[bytes] = [b""] * self.vocab_size
        self._byte_id = np.zeros(256, dtype=np.int32)
        for piece, i in vocab.items():
            self._pieces[i] = bytes(alphabet[c] for c in piece)
        for i, piece in enumerate(self._pieces):
            if len(piece) == 1:
                self._byte_id[piece[0]] = i
        if sum(len(p) == 1 for p in self._pieces) != 256:
            raise ValueError("a byte-level tokenizer must hold all 256 single bytes")

    @classmethod
    def train(cls, records: Iterable[bytes], vocab_size: int = 2048) -> "Tokenizer":
        """Learn merges from raw records (UTF-8 text; invalid records are skipped)."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
            show_progress=False,
        )

        def texts():
            for raw in records:
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    continue

        hf.train_from_iterator(texts(), trainer=trainer)
        return cls(hf)

    def encode(self, raw: bytes) -> np.ndarray:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._byte_id[np.frombuffer(raw, dtype=np.uint8)]
        return np.asarray(self._hf.encode_batch_fast([text], add_special_tokens=False)[0].ids, dtype=np.int32)

    def encode_batch(self, raws: list[bytes]) -> list[np.ndarray]:
        """Many records at once (``tokenizers`` parallelizes valid UTF-8 across threads).

        ``encode_batch_fast`` skips the character offsets we never read: the same ids, ~1.3x faster.
        """
        texts, where = [], []
        out: list[np.ndarray | None] = [None] * len(raws)
        for i, raw in enumerate(raws):
            try:
                texts.append(raw.decode("utf-8"))
                where.append(i)
            except UnicodeDecodeError:
                out[i] = self.encode(raw)
        for i, enc in zip(where, self._hf.encode_batch_fast(texts, add_special_tokens=False)):
            out[i] = np.asarray(enc.ids, dtype=np.int32)
        return out  # type: ignore[return-value]

    def decode(self, ids) -> bytes:
        ids = ids.tolist() if isinstance(ids, np.ndarray) else [int(i) for i in ids]
        return b"".join([self._pieces[i] for i in ids])

    def piece(self, i: int) -> bytes:
        return self._pieces[i]

    def piece_lengths(self) -> np.ndarray:
        """Bytes per id (int32), for the decoder's stop condition."""
        return np.array([len(p) for p in self._pieces], dtype=np.int32)

    def to_json(self) -> str:
        return self._hf.to_str()

    @classmethod
    def from_json(cls, text: str) -> "Tokenizer":
        """ValueError for text that is no tokenizer, or no tokenizer this class can use."""
        from tokenizers import Tokenizer as HFTokenizer

        try:
            hf = HFTokenizer.from_str(text)
        except Exception as e:  # tokenizers raises plain Exception for JSON and schema errors
            raise ValueError(f"not a tokenizers JSON ({e})") from None
        except BaseException as e:  # a Rust panic (pyo3's PanicException is no Exception): inconsistent content
            if type(e).__module__ != "pyo3_runtime":
                raise
            raise ValueError(f"tokenizers cannot build it ({e})") from None
        return cls(hf)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / FILENAME
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "Tokenizer":
        """The tokenizer saved in ``directory``; ArtifactError (naming the file) for anything unusable."""
        from nbmf.errors import ArtifactError

        path = Path(directory) / FILENAME
        try:
            if path.stat().st_size > MAX_BYTES:
                raise ValueError(f"larger than {MAX_BYTES} bytes")
            return cls.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:  # ValueError: UTF-8, JSON and the checks above
            raise ArtifactError(f"{path}: {e}; restore the artifact from its source") from None

    def sha256(self) -> str:
        return "sha256:" + hashlib.sha256(json.dumps(json.loads(self.to_json()), sort_keys=True).encode()).hexdigest()
