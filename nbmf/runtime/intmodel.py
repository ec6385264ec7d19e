"""The integer model: its parameters as the kernel's named groups, per-slot state, and the coder entry points.

The artifact stores a flat dict of integer arrays (safetensors) named as in ``PARAMS``; ``IntModel`` checks
each by name, shape, dtype and value range against the architecture and the bounds the kernels' exactness
arguments assume (``check_params``: the kernels do no bounds checks, so an unchecked index or table crashes the
process), packs every weight matrix once for the int8 kernel (nbmf.runtime.gemm) and hands the kernel
``kernels.Params``: named groups, never a positional list.
"""
from __future__ import annotations

import threading

import numpy as np

from nbmf.errors import ArtifactError
from nbmf.models.config import GATE_UNITS, ModelConfig
from nbmf.runtime import coder, kernels, layouts
from nbmf.runtime import match as match_model
from nbmf.runtime.gemm import KG, OB, narrow_width, pack, padded
from nbmf.runtime.lookup import BYTES

PARAMS = (
    "emb", "norm_k", "mixer_type", "mixer_idx",
    "wo", "wo_m", "wo_s", "w1", "w1_m", "w1_s", "act_lut", "w2", "w2_m", "w2_s",
    "qkv", "qkv_m", "qkv_s", "score_m", "score_s", "slopes", "attn_lut",
    "taps", "taps_m", "taps_s", "dilation", "conv_lut",
    "zc", "zc_m", "zc_s", "sig_lut",
    "wh", "wh_m", "wh_s", "head_lut",
)
DECODE_SLOTS = 64  # records in flight in a CPU decode (64 KB of caches each for v1; a finished one's slot is refilled)
WEIGHTS = ("wo", "w1", "w2", "qkv", "taps", "zc", "wh")  # int8 in the artifact and in memory
MAX_LUT = 1 << 16  # entries of attn_lut and head_lut (export writes 3,072 and 1,536): lookups clamp to the last
MAX_SLOT_BYTES = 1 << 26  # decode state per slot (v1: 68 KB): decode holds up to DECODE_SLOTS (a device, its slots)

# Inclusive value bounds and what the values are, each with the kernel argument that needs it (kernels.py, gemm.py).
_I8 = (-127, 127)  # gemm: activations and weights are int8 in [-127, 127]; the GELU tables feed the next gemm
_M = (1 << 30, (1 << 31) - 1)  # _requant: |acc| < 2**31 and m < 2**31 keep acc * m < 2**62 (2**30: export's form)
_S = (1, 62)  # _requant adds 1 << (s - 1): s >= 1, and s <= 62 keeps the rounding term and the shift in int64
_REQUANT = ("wo", "w1", "w2", "qkv", "score", "taps", "zc", "wh")
RANGES: dict[str, tuple[int, int, str]] = {
    "emb": (1 - (1 << 22), (1 << 22) - 1, "residual units"),  # _norm_rows: |r| < 2**22 keeps r * inv < 2**62
    "norm_k": (1, (1 << 17) - 1, "the norm's scale"),  # _norm_rows: inv < 2**40 as k < 2**17; k <= 0 flips or zeroes
    **{w: (*_I8, "int8 weights") for w in WEIGHTS},
    **{f"{w}_m": (*_M, "requantization multipliers") for w in _REQUANT},
    **{f"{w}_s": (*_S, "requantization shifts") for w in _REQUANT},
    "act_lut": (*_I8, "GELU table on the int8 grid"), "conv_lut": (*_I8, "GELU table on the int8 grid"),
    # _recur: a gate z in [0, 256] makes the state a convex mix, |state| <= 127 * 256
    "sig_lut": (0, GATE_UNITS, "sigmoid gate table"),
    # ALiBi: a key's score falls with its distance; 2**16 (256 nats a token) is past any use and keeps slope * W tiny
    "slopes": (0, 1 << 16, "ALiBi slopes"),
    "attn_lut": (0, 1 << 15, "softmax weights"),  # _attention: e <= 2**15 so 256 * hi + lo <= W * 2**15 * 127 < 2**31
    "head_lut": (1, 1 << 20, "token frequencies"),  # table: in [1, 2**20], every token codable, total < 2**53
}
# _attention's value sums: W * 2**15 * 127 < 2**31 (the window W is the config's context)
MAX_WINDOW = ((1 << 31) - 1) // ((1 << 15) * 127)  # 516 tokens
MIXER_CODE = {"attention": kernels.ATTN, "conv": kernels.CONV, "recurrent": kernels.RECURRENT}


class ParamsError(ArtifactError, ValueError):
    """Integer parameters that do not fit the architecture or the kernels' bounds: an ArtifactError (what loading
    an artifact raises) and a ValueError (export and tests hand IntModel their own arrays)."""


def _shapes(cfg: ModelConfig, n_attn: int, n_conv: int, n_rec: int, lut: dict[str, int]) -> dict[str, tuple]:
    d, hidden, layers, vocab = cfg.d_model, cfg.mlp_mult * cfg.d_model, cfg.n_layers, cfg.vocab_size
    return {
        "emb": (cfg.input_vocab, d), "norm_k": (), "mixer_type": (layers,), "mixer_idx": (layers,),
        "wo": (layers, d, d), "wo_m": (layers, d), "wo_s": (layers, d),
        "w1": (layers, hidden, d), "w1_m": (layers, hidden), "w1_s": (layers, hidden), "act_lut": (layers, 255),
        "w2": (layers, d, hidden), "w2_m": (layers, d), "w2_s": (layers, d),
        "qkv": (n_attn, 3 * d, d), "qkv_m": (n_attn, 3 * d), "qkv_s": (n_attn, 3 * d),
        "score_m": (n_attn,), "score_s": (n_attn,), "slopes": (n_attn, cfg.n_heads), "attn_lut": (lut["attn_lut"],),
        "taps": (n_conv, cfg.kernel_size, d), "taps_m": (n_conv, d), "taps_s": (n_conv, d), "dilation": (n_conv,),
        "conv_lut": (n_conv, 255),
        "zc": (n_rec, 2 * d, d), "zc_m": (n_rec, 2 * d), "zc_s": (n_rec, 2 * d), "sig_lut": (n_rec, 255),
        "wh": (vocab, d), "wh_m": (vocab,), "wh_s": (vocab,), "head_lut": (lut["head_lut"],),
    }


def _counts(cfg: ModelConfig) -> tuple[int, int, int]:
    """Layers of each mixer: (attention, conv, recurrent)."""
    mixers = cfg.mixers()
    return mixers.count("attention"), mixers.count("conv"), mixers.count("recurrent")


def _history(cfg: ModelConfig) -> int:
    """Positions a conv layer's ring keeps: the widest receptive field."""
    dilations = [cfg.dilation(i) for i, m in enumerate(cfg.mixers()) if m == "conv"]
    return 1 + (cfg.kernel_size - 1) * max(dilations or [1])


def _state_arrays(cfg: ModelConfig, batch: int) -> dict[str, tuple[tuple, type]]:
    """(shape, dtype) of each kernels.State array for ``batch`` slots."""
    n_attn, n_conv, n_rec = _counts(cfg)
    d, w, heads = cfg.d_model, cfg.context, cfg.n_heads
    dh = d // heads
    k_bytes = padded(w, OB) * padded(dh, KG)  # keys: a [W, d_head] matrix, packed
    v_bytes = padded(dh, narrow_width(dh)) * padded(w, KG)  # values: a [d_head, W] matrix, packed narrow
    return {
        "kp": ((n_attn, batch, heads, k_bytes), np.int8),
        "kb": ((n_attn, batch, heads, padded(w, OB)), np.int32),
        "vp": ((n_attn, batch, heads, v_bytes), np.int8),
        "rstate": ((n_rec, batch, d), np.int64),
        "chist": ((n_conv, batch, _history(cfg), d), np.int8),
        "pos": ((batch,), np.int64),
    }


def check_config(cfg: ModelConfig) -> None:
    """The bounds the kernels add to ModelConfig's own."""
    problems = []
    if "attention" in cfg.mixers() and cfg.context > MAX_WINDOW:
        problems.append(f"context {cfg.context} is longer than the attention kernel's exact window, {MAX_WINDOW} tokens")
    slot = sum(int(np.prod(shape)) * np.dtype(dt).itemsize for shape, dt in _state_arrays(cfg, 1).values())
    if slot > MAX_SLOT_BYTES:
        problems.append(f"the decode state of one record would take {slot} bytes (at most {MAX_SLOT_BYTES})")
    if problems:
        raise ParamsError("the integer runtime cannot run this architecture: " + "; ".join(problems))


def check_shapes(cfg: ModelConfig, shapes: dict[str, tuple]) -> None:
    """Exactly the arrays of PARAMS, each of the shape the architecture gives it. Takes shapes only, so a
    safetensors header is checked before its data is read."""
    missing = [k for k in PARAMS if k not in shapes]
    if missing:
        raise ParamsError(f"integer model lacks parameters {missing}")
    extra = sorted(set(shapes) - set(PARAMS))
    shapes = {k: tuple(int(n) for n in shapes[k]) for k in PARAMS}
    # kernels take len - 1 as the last index of a table, unsigned: an empty one is read past its end
    luts = {k: shapes[k][0] if len(shapes[k]) == 1 and 1 <= shapes[k][0] <= MAX_LUT else -1
            for k in ("attn_lut", "head_lut")}
    want = _shapes(cfg, *_counts(cfg), luts)
    wrong = [f"{k} {shapes[k]} (expected {want[k] if want[k] != (-1,) else f'1 to {MAX_LUT} entries'})"
             for k in PARAMS if shapes[k] != want[k]]
    wrong += [f"{k} (not an array the model has)" for k in extra]
    if wrong:
        raise ParamsError("integer model arrays do not fit the architecture: " + ", ".join(wrong))


def _dtypes(name: str) -> tuple[type, ...]:
    """The dtypes an array is written with (write_artifact: weights int8, the embedding int32 when it fits)."""
    return (np.int8,) if name in WEIGHTS else (np.int32, np.int64) if name == "emb" else (np.int64,)


def check_params(cfg: ModelConfig, params: dict[str, np.ndarray]) -> None:
    """Every array's presence, shape, dtype and value range, against the architecture and the bounds the kernels'
    exactness arguments assume (RANGES): the kernels index without bounds checks, so this is what keeps a hostile
    artifact from crashing the process. One ParamsError lists every problem."""
    check_config(cfg)
    check_shapes(cfg, {k: np.shape(v) for k, v in params.items()})
    problems = []
    for k in PARAMS:
        a = params[k]
        if getattr(a, "dtype", None) not in _dtypes(k):
            problems.append(f"{k} is {getattr(a, 'dtype', type(a).__name__)}, expected "
                            + " or ".join(np.dtype(t).name for t in _dtypes(k)))
            continue
        lo, hi, what = RANGES.get(k, (None, None, ""))
        if lo is not None and a.size and (a.min() < lo or a.max() > hi):
            problems.append(f"{k} holds values in [{a.min()}, {a.max()}], outside [{lo}, {hi}] ({what})")
    if problems:
        raise ParamsError("integer model arrays are out of range: " + "; ".join(problems))
    mixers = cfg.mixers()
    want = {  # forward indexes each mixer group's arrays by these: they must be the architecture's own
        "mixer_type": [MIXER_CODE[m] for m in mixers],
        "mixer_idx": [mixers[:i].count(m) for i, m in enumerate(mixers)],
        "dilation": [cfg.dilation(i) for i, m in enumerate(mixers) if m == "conv"],
    }
    problems = [f"{k} is {params[k].tolist()}, the {cfg.family} architecture's is {v}" for k, v in want.items()
                if params[k].tolist() != v]
    if params["attn_lut"][0] < 1:  # the best key's weight: _attention divides by 2 * the weights' total
        problems.append("attn_lut[0] must be at least 1")
    for k in ("attn_lut", "head_lut"):  # exp(-gap): a key or token further below the best never weighs more
        if np.any(np.diff(params[k]) > 0):
            problems.append(f"{k} must not increase")
    if problems:
        raise ParamsError("integer model arrays do not describe this model: " + "; ".join(problems))


def _linear(w: np.ndarray, m: np.ndarray, s: np.ndarray) -> kernels.Linear:
    """Stack of n [out, in] int8 matrices with their requantization (checked by check_params) -> one kernels.Linear."""
    packed = [pack(w[i]) for i in range(w.shape[0])]
    if packed:
        return kernels.Linear(np.stack([p.w for p in packed]), np.stack([p.bias for p in packed]),
                              np.ascontiguousarray(m, np.int64), np.ascontiguousarray(s, np.int64))
    empty = pack(np.zeros(w.shape[1:], np.int8))  # a group no layer uses: shapes only
    return kernels.Linear(np.zeros((0, empty.w.size), np.int8), np.zeros((0, empty.bias.size), np.int32),
                          np.zeros(m.shape, np.int64), np.zeros(s.shape, np.int64))


def _byte_table(lut: np.ndarray) -> np.ndarray:
    """[n, 255] tables of int8 values (q in [-127, 127] at q + 127) -> uint8 [n, 256] of the next gemm's input
    bytes (+128), as kernels._gelu looks them up; entry 255 is never read."""
    out = np.full((lut.shape[0], 256), 128, np.uint8)
    out[:, :255] = np.asarray(lut, np.int64) + 128
    return out


def build_params(cfg: ModelConfig, p: dict[str, np.ndarray]) -> kernels.Params:
    """The kernel's named parameter groups from the artifact's arrays (as ``check_params`` accepts them).

    attn_lut and head_lut are looked up per key and per token: int32 (their bounds fit) halves their cache
    footprint."""
    i64 = {k: np.ascontiguousarray(p[k], np.int64) for k in PARAMS if k not in WEIGHTS}
    return kernels.Params(
        emb=i64["emb"], norm_k=i64["norm_k"].reshape(1), mixer_type=i64["mixer_type"], mixer_idx=i64["mixer_idx"],
        out=_linear(p["wo"], i64["wo_m"], i64["wo_s"]),
        up=_linear(p["w1"], i64["w1_m"], i64["w1_s"]), act_lut=_byte_table(p["act_lut"]),
        down=_linear(p["w2"], i64["w2_m"], i64["w2_s"]),
        attn=kernels.Attention(_linear(p["qkv"], i64["qkv_m"], i64["qkv_s"]), i64["score_m"], i64["score_s"],
                               i64["slopes"], i64["attn_lut"].astype(np.int32)),
        conv=kernels.Conv(np.ascontiguousarray(p["taps"], np.int64), i64["taps_m"], i64["taps_s"], i64["dilation"],
                          i64["conv_lut"]),
        rec=kernels.Recurrent(_linear(p["zc"], i64["zc_m"], i64["zc_s"]), i64["sig_lut"]),
        head=_linear(p["wh"][None], i64["wh_m"][None], i64["wh_s"][None]), head_lut=i64["head_lut"].astype(np.int32),
    )


def _cat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays).astype(np.int64) if len(arrays) else np.zeros(0, np.int64)


class IntModel:
    """The integer model an artifact describes: its weights and, when it ships one, its match model
    (nbmf.runtime.match; ``match=None``: none, the neural tables as they are), and the body layout its words are
    stored in (``layouts.BODY_LAYOUTS``: how ``encode`` seals them)."""

    def __init__(self, cfg: ModelConfig, params: dict[str, np.ndarray], match: match_model.Match | None = None,
                 body_layout: int = layouts.BODY_LAYOUT):
        check_params(cfg, params)
        if body_layout not in layouts.BODY_LAYOUTS:
            raise ValueError(f"body layout {body_layout!r} is none of {layouts.BODY_LAYOUTS}")
        self.cfg = cfg
        self.body_layout = body_layout
        self.match = match_model.with_luts(match_model.off() if match is None else match, params["head_lut"])
        self.n_attn, self.n_conv, self.n_rec = _counts(cfg)
        self.history = _history(cfg)
        # as stored (weights int8): the torch path and ``storable`` read these
        self.params = {k: np.array(params[k], order="C") for k in PARAMS}
        for k in WEIGHTS:
            self.params[k] = self.params[k].astype(np.int8)
        self.kernel_params = build_params(cfg, self.params)
        d, hidden = cfg.d_model, cfg.mlp_mult * cfg.d_model
        self._k_pad = padded(max(d, hidden), KG)  # every matrix reads d or hidden inputs
        self._o_pad = max(padded(o, OB) for o in (3 * d, 2 * d, hidden, cfg.vocab_size))
        self._kept = threading.local()  # per thread: (state, work) of the last encode and decode calls

    def _scratch(self, what: str, slots: int, rows: int) -> tuple[kernels.State, kernels.Work]:
        """State for ``slots`` (at most DECODE_SLOTS) and work for ``rows``, kept per thread and reused by the next
        call of this thread (fresh buffers cost page faults: ~0.03 ms a call, half of a 1-token encode call). Reuse
        is safe: the kernels reset every slot they use, and no result reads scratch it did not write this call,
        apart from the constants new_work sets and nothing writes (offsets, the zero bias, the queries' padding;
        tested)."""
        kept = getattr(self._kept, what, None)
        if kept is None or kept[0].pos.shape[0] < slots or kept[1].r.shape[0] < rows:
            kept = (self.new_state(max(slots, 1)), self.new_work(max(rows, 1)))
            setattr(self._kept, what, kept)
        return kept

    def storable(self) -> dict[str, np.ndarray]:
        """Arrays as stored: weights int8, the residual-unit embedding int32 when it fits."""
        out = dict(self.params)
        if np.abs(out["emb"]).max(initial=0) < 2**31:
            out["emb"] = out["emb"].astype(np.int32)
        return out

    # -- state and scratch ----------------------------------------------------------------------------------
    def new_state(self, batch: int) -> kernels.State:
        return kernels.State(**{k: np.zeros(shape, dt) for k, (shape, dt) in _state_arrays(self.cfg, batch).items()})

    def new_work(self, rows: int) -> kernels.Work:
        cfg = self.cfg
        d, w, vocab = cfg.d_model, cfg.context, cfg.vocab_size
        dh = d // cfg.n_heads
        vw = narrow_width(dh)
        return kernels.Work(
            r=np.zeros((rows, d), np.int64), x=np.zeros((rows, self._k_pad), np.uint8),
            acc=np.zeros((rows, self._o_pad), np.int32), rowpos=np.zeros(rows, np.int64), q=np.zeros(3 * d, np.int64),
            koff=np.array([kernels.packed_offset(0, cc, padded(dh, KG) // KG, OB) for cc in range(dh)], np.int64),
            voff=np.array([kernels.packed_offset(cc, 0, padded(w, KG) // KG, vw) for cc in range(dh)], np.int64),
            xq=np.full((1, padded(dh, KG)), 128, np.uint8), sacc=np.zeros((1, padded(w, OB)), np.int32),
            sc=np.zeros(w, np.int64), xe=np.zeros((2, padded(w, KG)), np.uint8),
            vacc=np.zeros((2, padded(dh, vw)), np.int32), vzero=np.zeros(padded(dh, vw), np.int32),
            gidx=np.zeros(padded(cfg.mlp_mult * d, BYTES), np.uint8), freq=np.zeros(vocab, np.int64),
            blocks=np.zeros(-(-vocab // kernels.BLOCK), np.int64),
        )

    # -- tables (tests, cross-entropy, cross-device checks) ----------------------------------------------
    def step(self, state: kernels.State, tokens: np.ndarray, slots: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Feed ``tokens[j]`` to record ``slots[j]`` (a slot's rows in order); next-token frequencies [n, vocab].

        float64 holding exact integers in [1, 2**20]: the tables the coder quantizes.
        """
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        if out is None:
            out = np.empty((len(tokens), self.cfg.vocab_size), np.float64)
        if len(tokens):
            kernels.frequencies(self.kernel_params, state, tokens, slots, self.new_work(min(len(tokens), kernels.CHUNK)), out)
        return out

    def frequencies(self, sequence: np.ndarray, targets: np.ndarray | None = None) -> np.ndarray:
        """Frequencies after each prefix of one record's input sequence: [len(sequence), vocab]. Given the
        record's ``targets`` (its token ids), the tables the coder uses: with the match model's boosts."""
        if targets is None:
            return self.step(self.new_state(1), sequence, np.zeros(len(sequence), np.int64))
        sequence = np.ascontiguousarray(sequence, np.int64)
        out = np.empty((len(sequence), self.cfg.vocab_size), np.float64)
        if len(sequence):
            kernels.coded_tables(self.kernel_params, self.match, self.new_state(1),
                                 self.new_work(min(len(sequence), kernels.CHUNK)), sequence,
                                 np.ascontiguousarray(targets, np.int64), out)
        return out

    # -- coding ----------------------------------------------------------------------------------------------
    def encode(self, inputs: list[np.ndarray], targets: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """Range-coded words (uint32) of each record, targets[r] coded under the tables after inputs[r], and a
        bool per record: its words decode back to what was coded (``kernels.verify_records``; no model run)."""
        lengths = np.array([len(x) for x in inputs], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        word_starts = np.concatenate([[0], np.cumsum([coder.max_words(n) for n in lengths])]).astype(np.int64)
        words = np.zeros(int(word_starts[-1]), np.uint32)
        lefts = np.zeros(int(starts[-1]), np.int64)
        probs = np.zeros(int(starts[-1]), np.int64)
        state, work = self._scratch("encode", 1, kernels.CHUNK)
        n_words = kernels.encode_records(self.kernel_params, self.match, state, work, _cat(inputs), _cat(targets),
                                         starts, words, word_starts, lefts, probs, layouts.shortest_seal(self.body_layout))
        ok = kernels.verify_records(words, word_starts, n_words, starts, lefts, probs)
        return [words[word_starts[r] : word_starts[r] + n_words[r]] for r in range(len(inputs))], ok

    def match_events(self, inputs: list[np.ndarray], targets: list[np.ndarray], m: match_model.Match) -> dict:
        """Every prediction match model ``m`` makes on these records, with the neural tables' view of it
        (``kernels.match_events``): arrays length, f, total, hit. What ``match.fit_table`` fits on."""
        starts = np.concatenate([[0], np.cumsum([len(x) for x in inputs])]).astype(np.int64)
        room = int(starts[-1])
        out = {k: np.zeros(room, np.int64) for k in ("length", "f", "total")}
        out["hit"] = np.zeros(room, np.bool_)
        state, work = self._scratch("encode", 1, kernels.CHUNK)
        n = kernels.match_events(self.kernel_params, m, state, work, _cat(inputs), _cat(targets), starts,
                                 out["length"], out["f"], out["total"], out["hit"])
        return {k: v[:n] for k, v in out.items()}

    def decode(self, first: np.ndarray, bodies: list[np.ndarray], lengths: np.ndarray, piece_len: np.ndarray,
               max_tokens: np.ndarray | None = None):
        """Tokens of records decoded in lockstep -> (list of int64 token arrays, status per record).

        Record r gets room for min(lengths[r], max_tokens[r]) tokens (every token is >= 1 byte); a record that
        needs more stops with PAST_LENGTH."""
        n = len(bodies)
        words, word_starts, lengths, out, out_starts, n_out, status = decode_buffers(bodies, lengths, max_tokens)
        if n:
            slots = min(n, DECODE_SLOTS)
            state, work = self._scratch("decode", slots, slots)
            kernels.decode_records(self.kernel_params, self.match, state, work, slots, np.asarray(first, np.int64),
                                   words, word_starts, lengths, np.asarray(piece_len, np.int64), out, out_starts,
                                   n_out, status)
        return [out[out_starts[r] : out_starts[r] + n_out[r]] for r in range(n)], status


def decode_buffers(bodies: list[np.ndarray], lengths, max_tokens=None):
    """What a lockstep decode reads and writes: (words, word_starts, lengths, out, out_starts, n_out, status).

    Record r gets room for min(lengths[r], max_tokens[r]) tokens in out (every token is >= 1 byte)."""
    n = len(bodies)
    word_starts = np.concatenate([[0], np.cumsum([len(b) for b in bodies])]).astype(np.int64)
    words = np.concatenate(bodies).astype(np.uint32) if n else np.zeros(0, np.uint32)
    lengths = np.asarray(lengths, np.int64)
    room = lengths if max_tokens is None else np.minimum(lengths, np.asarray(max_tokens, np.int64))
    out_starts = np.concatenate([[0], np.cumsum(room)]).astype(np.int64)
    return (words, word_starts, lengths, np.zeros(int(out_starts[-1]), np.int64), out_starts, np.zeros(n, np.int64),
            np.zeros(n, np.int64))
