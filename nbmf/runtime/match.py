"""The match model: an integer copy mechanism mixed into the neural model's frequency tables (lpaq/PAQ style).

Before token t of a record, the last ``k`` tokens are hashed to a slot of a per-record table that holds the
position that followed their latest earlier occurrence. If no match is being followed, that position is the
candidate: its match length L is the number of tokens before it that equal the tokens before t (counted back,
at most ``max_len``); L >= k makes it the match (a hash collision gives L < k and no match). While a match is
followed, each correctly predicted token extends it (L + 1, capped) and a wrong one ends it. The predicted token
is the one that followed the earlier occurrence.

Mixing: with the neural table f (sum T) and predicted token s, the token gets the calibrated hit probability
q = hit[length bucket of L, probability bucket of f_s / T] / 2**15 that the artifact's table holds (fitted on
training data, ``fit``): f_s += B with B = ceil-free floor((q T - 2**15 f_s) / (2**15 - q)), so that
(f_s + B) / (T + B) ~ q and every other token keeps its share of the rest; B = 0 when q <= f_s / T (the match
then only confirms what the model believes). Every quantity is an integer (bounds beside each line), computed
from the tokens before t alone, by the same functions in encode (``kernels.encode_records``) and decode
(``kernels.decode_records``): the table the decoder builds for token t is the encoder's, bit for bit.

Temperature (optional, v3 on): a per-record temperature tau on the neural table, learned online. Every table is
built with tau = q / 16 (q in [min, max]) by looking token gaps up in a tempered copy of head_lut, row q:
lut_q[g] = head_lut[min((g * q + 8) >> 4, last)] (``luts``: integers, built at load). After token y is coded,
tau moves by online gradient descent on the token's code length: d log p_tau(y) / d tau = E_tau[gap] - gap_y
(gaps below the best logit, in 1/64 nat, capped at the row's length), so theta += eta * (E // 1 - gap_y), theta
= tau * 2**16 clamped to [min, max] * 2**12; q = round(theta / 2**12). A model surprised by a record (one from a
source it never saw, say) flattens its tables; one that predicts well sharpens them. The match boost is mixed in
after the tempered table, and the update uses the neural table alone.

The artifact holds the model as ``match.json`` (nbmf.artifact): k, table_bits, max_len, the hit table and, when
on, "temperature": {"eta", "min", "max"}; a ``Match`` with ``conf[0] == 0`` is no match model (artifacts without
one, such as v1: their tables are unchanged); ``temp[0] == 0`` is no temperature (v2).
"""
from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np
from numba import njit

from nbmf.errors import ArtifactError

HIT_BITS = 15  # hit probabilities on a 2**15 grid: q < 2**15 keeps q * total < 2**15 * 2**37 = 2**52
HIT_ONE = 1 << HIT_BITS
# The most a hit table may give: 1 - 2**-9, about the neural tables' own largest probability (v1: 2**20 / (2**20 +
# 2047)), so a token never costs less than ~0.0028 bits and a body's decode-bomb bound (NeuralCodec.max_tokens)
# stays what it is without a match model; a longer match would gain at most ~0.003 bits a token from more.
HIT_MAX = HIT_ONE - (HIT_ONE >> 9)
LEN_BUCKETS = 20  # L in 1..15 itself, then 16-31, 32-63, 64-127, 128+ (len_bucket)
PROB_BUCKETS = 30  # the neural probability of the predicted token, in halvings towards 0 and towards 1 (prob_bucket)
MAX_K = 8  # tokens hashed
TABLE_BITS = (6, 16)  # per-record hash table: 2**bits int32 positions (16 KB at 12 bits)
MAX_LEN = 1 << 10  # the longest length counted (each new match counts back at most this many tokens)
FORMAT = "nbmf-match/1"
TAU_BITS = 4  # tau = q / 16
THETA_BITS = 16  # the record's tau, theta / 2**16, moves in steps of eta / 2**16 per 1/64 nat of gradient
Q_RANGE = (4, 32)  # tau in [0.25, 2]: lut rows of at most head_lut's length * 4
MAX_ETA = 1 << 10  # theta steps <= 2**10 * gap cap (<= 2**18): < 2**28
MS_WIDTH = 3  # per-record state: followed position, match length, theta


class Match(NamedTuple):
    conf: np.ndarray  # int64 [4]: on (0 or 1), k, table_bits, max_len
    hit: np.ndarray  # int64 [LEN_BUCKETS, PROB_BUCKETS]: calibrated hit probability * 2**15, in [0, HIT_MAX]
    temp: np.ndarray  # int64 [4]: temperature on (0 or 1), eta, min q, max q
    luts: np.ndarray  # int32 [max - min + 1, L]: head_lut tempered, row q - min (``with_luts``; [1, 1] when off)


def off() -> Match:
    """No match model: the neural tables as they are."""
    return Match(np.zeros(4, np.int64), np.zeros((LEN_BUCKETS, PROB_BUCKETS), np.int64), np.zeros(4, np.int64),
                 np.ones((1, 1), np.int32))


def make(k: int, table_bits: int, max_len: int, hit, temperature: dict | None = None) -> Match:
    """A match model from its parameters (checked: ``problems``); ``temperature``: {"eta", "min", "max"} or None.
    Its tables need the model's head_lut: ``with_luts``."""
    spec = {"format": FORMAT, "k": k, "table_bits": table_bits, "max_len": max_len,
            "hit": np.asarray(hit, np.int64).tolist()}
    if temperature is not None:
        spec["temperature"] = dict(temperature)
    bad = problems(spec)
    if bad:
        raise ValueError("; ".join(bad))
    return _from_spec(spec)


def with_temperature(m: Match, eta: int, q_min: int, q_max: int) -> Match:
    """``m`` with an online temperature (checked)."""
    return make(int(m.conf[1]), int(m.conf[2]), int(m.conf[3]), m.hit, {"eta": eta, "min": q_min, "max": q_max})


def with_luts(m: Match, head_lut: np.ndarray) -> Match:
    """``m`` with its tempered head_lut rows: lut_q[g] = head_lut[min((g * q + 8) >> 4, last)], every row long
    enough that its last entry is head_lut's last (so the kernels' clamp to a row's end is that row's own value)."""
    if not m.temp[0]:
        return m
    lut = np.asarray(head_lut, np.int64)
    last = lut.shape[0] - 1
    q = np.arange(m.temp[2], m.temp[3] + 1, dtype=np.int64)[:, None]
    g = np.arange(((last << TAU_BITS) + m.temp[2] - 1) // m.temp[2] + 1, dtype=np.int64)[None, :]
    rows = lut[np.minimum((g * q + (1 << (TAU_BITS - 1))) >> TAU_BITS, last)]  # g * q < 2**18 * 2**5
    return m._replace(luts=np.ascontiguousarray(rows.astype(np.int32)))


def to_json(m: Match) -> bytes:
    """The artifact's match.json bytes (canonical: sorted keys, one line per length bucket)."""
    on, k, bits, max_len = (int(x) for x in m.conf)
    if not on:
        raise ValueError("no match model to write")
    rows = ",\n    ".join(json.dumps(row) for row in m.hit.tolist())
    temp = ""
    if m.temp[0]:
        temp = f',\n  "temperature": {{"eta": {int(m.temp[1])}, "max": {int(m.temp[3])}, "min": {int(m.temp[2])}}}'
    return (f'{{\n  "format": "{FORMAT}",\n  "hit": [\n    {rows}\n  ],\n  "k": {k},\n  "max_len": {max_len},\n'
            f'  "table_bits": {bits}{temp}\n}}\n').encode()


def problems(spec) -> list[str]:
    """What keeps a parsed match.json from being a match model the kernels can run exactly."""
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        return [f"it is not a {FORMAT} object"]
    want = {"format", "k", "table_bits", "max_len", "hit"}
    if not want <= set(spec) <= want | {"temperature"}:
        return [f"it must hold exactly {sorted(want)} and optionally 'temperature', got {sorted(spec)}"]
    out = []
    temp = spec.get("temperature", {"eta": 1, "min": 16, "max": 16})
    if not (isinstance(temp, dict) and set(temp) == {"eta", "min", "max"} and all(type(v) is int for v in temp.values())):
        out.append("temperature must be {\"eta\": int, \"min\": int, \"max\": int}")
    elif not (1 <= temp["eta"] <= MAX_ETA and Q_RANGE[0] <= temp["min"] <= 16 <= temp["max"] <= Q_RANGE[1]):
        out.append(f"temperature needs eta in [1, {MAX_ETA}] and {Q_RANGE[0]} <= min <= 16 <= max <= {Q_RANGE[1]}")
    ints = {name: spec[name] for name in ("k", "table_bits", "max_len")}
    for name, v in ints.items():
        if type(v) is not int:
            out.append(f"{name} is {v!r}, not an integer")
    if out:
        return out
    if not 1 <= ints["k"] <= MAX_K:
        out.append(f"k is {ints['k']}, not in [1, {MAX_K}]")
    if not TABLE_BITS[0] <= ints["table_bits"] <= TABLE_BITS[1]:
        out.append(f"table_bits is {ints['table_bits']}, not in {list(TABLE_BITS)}")
    if not ints["k"] <= ints["max_len"] <= MAX_LEN:
        out.append(f"max_len is {ints['max_len']}, not in [k, {MAX_LEN}]")
    hit = spec["hit"]
    if not (isinstance(hit, list) and len(hit) == LEN_BUCKETS
            and all(isinstance(row, list) and len(row) == PROB_BUCKETS for row in hit)):
        out.append(f"hit is not a {LEN_BUCKETS} x {PROB_BUCKETS} table")
    elif not all(type(v) is int and 0 <= v <= HIT_MAX for row in hit for v in row):
        out.append(f"hit holds a value that is not an integer in [0, {HIT_MAX}]")  # boost: q < 2**15; HIT_MAX
    return out


def _from_spec(spec: dict) -> Match:
    conf = np.array([1, spec["k"], spec["table_bits"], spec["max_len"]], np.int64)
    t = spec.get("temperature")
    temp = np.array([1, t["eta"], t["min"], t["max"]] if t else [0, 0, 16, 16], np.int64)
    return Match(conf, np.array(spec["hit"], np.int64).reshape(LEN_BUCKETS, PROB_BUCKETS), temp,
                 np.ones((1, 1), np.int32))


def from_json(data: bytes, where: str) -> Match:
    """The match model of a match.json file's bytes; ArtifactError naming ``where`` if it is not one."""
    try:
        spec = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ArtifactError(f"{where} is not valid JSON ({type(e).__name__}: {e})") from None
    bad = problems(spec)
    if bad:
        raise ArtifactError(f"{where} is not a match model: " + "; ".join(bad))
    return _from_spec(spec)


@njit(nogil=True, cache=True)
def state(conf, slots):
    """Per-slot match state of the model with ``conf``: (hash table int32 [slots, 2**bits] of positions + 1's
    successor, 0 = empty; int64 [slots, MS_WIDTH]: followed position, length, theta). Zero-width table when the
    model is off. ``reset`` before a record."""
    return (np.zeros((slots, (np.int64(1) << conf[2]) * conf[0]), np.int32),
            np.zeros((slots, MS_WIDTH), np.int64))


# -- kernels (called per token from nbmf.runtime.kernels) -------------------------------------------------
@njit(nogil=True, cache=True)
def reset(ht, ms, r):
    ht[r, :] = 0
    ms[r, 0] = 0
    ms[r, 1] = 0
    ms[r, 2] = np.int64(1) << THETA_BITS  # tau = 1


@njit(nogil=True, cache=True)
def level(temp, ms, r):
    """Record r's lut row: q - min, q = theta / 2**12 rounded, in [min, max]."""
    q = (ms[r, 2] + (np.int64(1) << (THETA_BITS - TAU_BITS - 1))) >> (THETA_BITS - TAU_BITS)
    return min(max(q, temp[2]), temp[3]) - temp[2]


@njit(nogil=True, cache=True)
def temper(temp, ms, r, expected_num, total, gap):
    """After a token coded at ``gap`` below the best logit (1/64 nat, capped) in a table whose sum is ``total``
    and whose sum of f_v * gap_v is ``expected_num`` (< 2**20 * 2**18 * 2**17 = 2**55): theta moves by
    eta * (E[gap] - gap), clamped to [min, max] * 2**12."""
    d = expected_num // total - gap  # |d| <= the gap cap < 2**18
    theta = ms[r, 2] + temp[1] * d  # eta <= 2**10: |step| < 2**28
    lo, hi = temp[2] << (THETA_BITS - TAU_BITS), temp[3] << (THETA_BITS - TAU_BITS)
    ms[r, 2] = min(max(theta, lo), hi)


@njit(nogil=True, cache=True, inline="always")
def _bit_length(v):
    n = 0
    while v > 0:  # v <= 2**15: at most 16 steps
        v >>= 1
        n += 1
    return n


@njit(nogil=True, cache=True)
def predict(conf, ht, ms, r, x, base, t):
    """Record r's match prediction for its token t, its tokens so far being x[base : base + t]: the predicted
    token, or -1. Updates the record's state (``ms[r]``, ``ht[r]``) with token t's context; call ``observe`` with
    the actual token when the prediction was >= 0."""
    k = conf[1]
    if t < k:
        return -1
    h = np.int64(0)
    for j in range(base + t - k, base + t):
        h = (h * 40503 + x[j] + 1) & 0xFFFFFF  # h < 2**24, token ids < 2**17: < 2**40
    idx = ((h * 2654435761) >> 32) & ((np.int64(1) << conf[2]) - 1)  # Knuth's multiplier: < 2**24 * 2**32 = 2**56
    if ms[r, 1] == 0:
        cand = np.int64(ht[r, idx])  # a position in [k, t): the token after an earlier occurrence of this hash
        if cand > 0:
            n = 0
            while n < conf[3] and n < cand and x[base + t - 1 - n] == x[base + cand - 1 - n]:
                n += 1  # cand < t: both indices stay in [base, base + t)
            if n >= k:  # a hash collision counts fewer than k equal tokens
                ms[r, 0] = cand
                ms[r, 1] = n
    ht[r, idx] = t  # t < 2**31: positions of one record fit int32
    if ms[r, 1] == 0:
        return -1
    return x[base + ms[r, 0]]  # ms[r, 0] < t


@njit(nogil=True, cache=True)
def observe(conf, ms, r, predicted, actual):
    """After a prediction >= 0: a hit extends the match (the followed position moves on with t), a miss ends it."""
    if predicted == actual:
        ms[r, 0] += 1  # stays < t + 1, the next position
        ms[r, 1] = min(ms[r, 1] + 1, conf[3])
    else:
        ms[r, 1] = 0


@njit(nogil=True, cache=True)
def len_bucket(n):
    """1..15 -> itself, 16-31 -> 16, 32-63 -> 17, 64-127 -> 18, >= 128 -> 19."""
    if n < 16:
        return n
    return min(LEN_BUCKETS - 1, 11 + _bit_length(n))


@njit(nogil=True, cache=True)
def prob_bucket(f, total):
    """f / total (1 <= f <= total < 2**37) in 30 buckets: halvings towards 0 (0-14) and towards 1 (15-29)."""
    u = (f << HIT_BITS) // total  # f <= 2**20: < 2**35; u in [0, 2**15]
    if u < HIT_ONE // 2:
        return _bit_length(u)  # 0..14
    return min(PROB_BUCKETS - 1, 30 - _bit_length(HIT_ONE - u))  # 15..29


@njit(nogil=True, cache=True)
def boost(hit, length, f, total):
    """B >= 0 to add to the predicted token's frequency f (table sum total <= vocab * 2**20 <= 2**37) so that
    (f + B) / (total + B) ~ q = hit[...] / 2**15. total + B <= 2**37 + 2**52 < 2**53: the coder's bound."""
    q = hit[len_bucket(length), prob_bucket(f, total)]  # q in [0, HIT_MAX], HIT_MAX < 2**15
    num = q * total - (f << HIT_BITS)  # q * total < 2**52; f << 15 <= 2**35
    if num <= 0:
        return np.int64(0)
    return num // (HIT_ONE - q)  # <= num < 2**52


# -- fitting ----------------------------------------------------------------------------------------------
@njit(cache=True)
def _bucket_arrays(length, f, total):
    lb = np.empty(length.shape[0], np.int64)
    pb = np.empty(length.shape[0], np.int64)
    for i in range(length.shape[0]):
        lb[i] = len_bucket(length[i])
        pb[i] = prob_bucket(f[i], total[i])
    return lb, pb


def _with_buckets(events: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if "lb" in events:
        return events
    lb, pb = _bucket_arrays(events["length"], events["f"], events["total"])
    return {**events, "lb": lb, "pb": pb}


def fit_table(events: dict[str, np.ndarray], min_events: int = 30) -> tuple[np.ndarray, dict]:
    """The hit table from match events (``kernels.match_events``: per prediction its length, the neural f of the
    predicted token, the table's total, whether it hit). Per bucket, the calibrated hit probability
    (hits + 1/2) / (n + 1), then the q on a grid around it that spends the fewest bits on the bucket's own events
    (B = 0 below the neural probability shifts the optimum a little). A bucket with fewer than ``min_events``
    events takes the value of the same probability bucket at the next shorter length (a longer match hits at least
    as often in practice; long matches are rare in training records, and a 0 there would give up the surest
    predictions), 0 (no boost) when there is none. Returns (table, stats)."""
    events = _with_buckets(events)
    lb, pb, hit = events["lb"], events["pb"], events["hit"].astype(bool)
    table = np.zeros((LEN_BUCKETS, PROB_BUCKETS), np.int64)
    saved = 0.0
    for i in range(LEN_BUCKETS):
        for j in range(PROB_BUCKETS):
            sel = (lb == i) & (pb == j)
            n = int(sel.sum())
            if n < min_events:
                table[i, j] = table[i - 1, j] if i else 0
                continue
            h = int(hit[sel].sum())
            p = (h + 0.5) / (n + 1)
            grid = np.unique(np.clip(np.round(HIT_ONE * np.concatenate([[p], p * np.linspace(0.8, 1.2, 41)])),
                                     0, HIT_MAX))
            one = {k: v[sel] for k, v in events.items()}
            gains = []
            for q in grid:
                table[i, j] = int(q)
                gains.append(bits_saved(table, one))
            best = int(np.argmax(gains))
            table[i, j] = int(grid[best]) if gains[best] > 0 else 0
            saved += max(0.0, gains[best])
    return table, {"events": int(len(hit)), "hits": int(hit.sum()), "bits_saved_on_fit_data": round(saved, 1)}


def bits_saved(table: np.ndarray, events: dict[str, np.ndarray]) -> float:
    """Bits the hit ``table`` saves on ``events`` against the neural tables alone (float: fitting only)."""
    events = _with_buckets(events)
    q = table[events["lb"], events["pb"]].astype(np.float64)
    f, total, hit = events["f"].astype(np.float64), events["total"].astype(np.float64), events["hit"].astype(bool)
    b = np.maximum(0.0, np.floor((q * total - f * HIT_ONE) / (HIT_ONE - q)))
    return float(np.where(hit, np.log2((f + b) / (total + b) * total / f), -np.log2((total + b) / total)).sum())
