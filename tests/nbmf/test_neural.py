"""The neural codec: exact round trips, batch invariance, code length vs cross-entropy, artifact checks."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.artifacts import DEVICE, assert_device_matches_kernel, sample_items
from nbmf.codecs.neural import load_codec
from nbmf.errors import ArtifactError, CorruptBlobError
from nbmf.runtime import layouts

ROOT = Path(__file__).resolve().parents[2]
VAL = ROOT / "data" / "sample" / "val.jsonl"


@pytest.fixture(scope="session", params=["transformer", "cnn", "recurrent", "hybrid"])
def family_codec(request, tmp_path_factory):
    from helpers.artifacts import tiny_artifact

    path = tiny_artifact(tmp_path_factory.mktemp(request.param) / "v1", family=request.param, steps=12)
    return load_codec(path)


@pytest.fixture(scope="session")
def val_items():
    return sample_items(VAL, limit=60)


def test_every_family_round_trips_and_batches_identically(family_codec, val_items):
    items = val_items[:24]
    bodies = family_codec.encode_many(items)
    assert [family_codec.encode_raw(raw, kind) for raw, kind in items[:5]] == bodies[:5]
    decoded = family_codec.decode_many([(b, kind, len(raw)) for b, (raw, kind) in zip(bodies, items)])
    assert decoded == [raw for raw, _ in items]
    one_by_one = [family_codec.decode_raw(b, kind, len(raw)) for b, (raw, kind) in zip(bodies[:6], items[:6])]
    assert one_by_one == [raw for raw, _ in items[:6]]


def test_scratch_kept_between_calls_never_leaks_into_results(family_codec, val_items):
    """The model keeps its state and scratch per thread for the next call: fill them with garbage (all but the
    constants the work holds: offsets, the zero bias, the queries' padding) and the bytes stay the same."""
    items = val_items[:7]
    bodies = family_codec.encode_many(items)
    jobs = [(b, kind, len(raw)) for b, (raw, kind) in zip(bodies, items)]
    assert family_codec.decode_many(jobs) == [raw for raw, _ in items]
    rng = np.random.default_rng(0)
    for what in ("encode", "decode"):
        state, work = getattr(family_codec.model._kept, what)
        constant = {"koff", "voff", "vzero", "xq"}
        for a in [*state, *(getattr(work, f) for f in work._fields if f not in constant)]:
            a[...] = rng.integers(-100, 100, a.shape) if a.dtype != np.uint8 else rng.integers(0, 256, a.shape)
    assert family_codec.encode_many(items) == bodies
    assert family_codec.decode_many(jobs[2:]) == [raw for raw, _ in items[2:]]  # fewer slots than kept


def test_decode_with_fewer_slots_than_records_refills_them(family_codec, val_items, monkeypatch):
    """A decode keeps at most DECODE_SLOTS records in flight and gives a finished record's slot to the next: with 2
    slots, 24 records of mixed lengths pass through each slot many times and come back whole."""
    from nbmf.runtime import intmodel

    items = val_items[:24]
    bodies = family_codec.encode_many(items)
    jobs = [(b, kind, len(raw)) for b, (raw, kind) in zip(bodies, items)]
    monkeypatch.setattr(intmodel, "DECODE_SLOTS", 2)
    assert family_codec.decode_many(jobs) == [raw for raw, _ in items]


@pytest.fixture(scope="session")
def codec(tmp_path_factory):
    from helpers.artifacts import tiny_artifact

    return load_codec(tiny_artifact(tmp_path_factory.mktemp("tiny") / "v1", steps=30))


def test_code_length_is_within_one_percent_of_cross_entropy(codec, val_items):
    for raw, kind in val_items[:20]:
        body_bits = 8 * len(codec.encode_raw(raw, kind))
        assert body_bits <= 1.01 * codec.cross_entropy_bits(raw, kind) + 8 * 4


@pytest.mark.parametrize("fidelity", [0, 1])
def test_fidelity_conditions_the_model(codec, fidelity):
    raw = b'{"role": "user", "content": "hello there"}'
    body = codec.encode_raw(raw, 1, fidelity=fidelity)
    assert codec.decode_raw(body, 1, len(raw), fidelity=fidelity) == raw


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=300), st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_any_bytes_round_trip(codec, raw):
    body = codec.encode_raw(raw, 2)
    assert codec.decode_raw(body, 2, len(raw)) == raw


def test_wrong_length_or_garbage_body_is_an_error_not_wrong_data(codec, val_items):
    raw, kind = val_items[0]
    body = codec.encode_raw(raw, kind)
    with pytest.raises(CorruptBlobError):
        codec.decode_raw(body, kind, 0)
    # a body decoded against a length it was not written for either fails or, never silently, returns
    # other bytes: the blob checksum (nbmf.blob) is what rejects corruption before the codec runs.
    out = None
    try:
        out = codec.decode_raw(body, kind, len(raw) + 7)
    except CorruptBlobError:
        pass
    assert out != raw


def test_tampered_artifact_is_refused(codec, tmp_path):
    bad = tmp_path / "v1"
    shutil.copytree(codec.path, bad)
    weights = bad / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="modified or corrupted"):
        load_codec(bad)
    (bad / "weights.safetensors").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_codec(bad)


def test_manifest_describes_the_artifact(codec):
    m = json.loads((codec.path / "manifest.json").read_text())
    assert m["version"] == "v1" and m["encoder_id"] == 1
    assert m["architecture"]["family"] == "transformer"
    assert set(m["files"]) == {"weights.safetensors", "tokenizer.json"}
    assert m["quantization"]["weights"].startswith("int8")
    assert m["body"] == layouts.BODY_LAYOUT == codec.model.body_layout


def test_a_layout_1_copy_writes_the_same_records_with_a_longer_seal(codec, val_items, tmp_path):
    """The same model in body layout 1 (its manifest names none: little-endian words, constriction's seal) gives
    every record back too, in bodies about 2 bytes longer each: layout 2's seal is the shortest."""
    old = tmp_path / "v1"
    shutil.copytree(codec.path, old)
    m = json.loads((old / "manifest.json").read_text())
    del m["body"]
    (old / "manifest.json").write_text(json.dumps(m))
    codec1 = load_codec(old)
    assert codec1.model.body_layout == 1 and codec1.fingerprint != codec.fingerprint
    items = val_items[:40]
    b1, b2 = codec1.encode_many(items), codec.encode_many(items)
    for c, bodies in ((codec1, b1), (codec, b2)):
        assert c.decode_many([(b, k, len(r)) for b, (r, k) in zip(bodies, items)]) == [r for r, _ in items]
    assert sum(map(len, b1)) - sum(map(len, b2)) > len(items)


def test_callers_on_many_threads_share_one_pool_and_get_their_bytes(codec, val_items, monkeypatch):
    """Serve calls one codec from several threads: the first calls make one worker pool between them (a slow
    constructor widens the window a second pool would be made in), and a caller that changes ``threads`` while
    others code replaces it without failing their work."""
    import copy
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from nbmf.codecs import neural

    made = []

    class SlowPool(ThreadPoolExecutor):
        def __init__(self, *a, **kw):
            time.sleep(0.05)
            made.append(self)
            super().__init__(*a, **kw)

    monkeypatch.setattr(neural, "ThreadPoolExecutor", SlowPool)
    mine = copy.copy(codec)
    mine.threads, mine._pool, mine._pool_size, mine._pool_lock = 2, None, 0, threading.Lock()
    items = val_items[:8]
    want = codec.encode_many(items)
    with ThreadPoolExecutor(6) as callers:
        got = list(callers.map(lambda _: mine.encode_many(items), range(6)))
    assert got == [want] * 6 and len(made) == 1

    def switch(i):
        mine.threads = 2 + i % 2
        return mine.encode_many(items)

    with ThreadPoolExecutor(6) as callers:
        assert list(callers.map(switch, range(12))) == [want] * 12
    for pool in made:
        pool.shutdown()


@pytest.mark.parametrize("enc,dec", [((1, 1), (7, 2)), ((32, 2), (1, 1)), ((7, 2), (32, 1))])
def test_blobs_decode_in_another_process_with_other_batch_and_threads(codec, enc, dec):
    from helpers.artifacts import cross_process

    bodies = cross_process(codec.path, VAL, "encode", *enc, limit=40)
    assert cross_process(codec.path, VAL, "decode", *dec, limit=40, stdin=bodies).startswith("ok 40")


def test_warm_up_compiles_every_kernel_a_call_reaches(codec):
    """A server calls warm_up before its first request: in a fresh process it leaves the encode and the decode
    kernels compiled (or loaded from numba's cache), so no request pays seconds of compiling."""
    script = ("import sys; from nbmf.codecs.neural import load_codec; from nbmf.runtime import kernels; "
              "c = load_codec(sys.argv[1]); k = (kernels.encode_records, kernels.decode_records); "
              "print([len(f.signatures) for f in k]); c.warm_up(); print([len(f.signatures) for f in k])")
    p = subprocess.run([sys.executable, "-c", script, str(codec.path)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:2] == ["[0, 0]", "[1, 1]"]


def test_reference_interpreter_matches_compiled_kernel(codec):
    """NUMBA_DISABLE_JIT runs the same kernel as plain Python: the integers must agree exactly."""
    seq = np.array([codec.cfg.special_token(0, 0)] + list(codec.tokenizer.encode(b"Hello, memory!")), np.int64)
    fast = codec.model.frequencies(seq)
    script = ("import sys, numpy as np; from nbmf.codecs.neural import load_codec; c = load_codec(sys.argv[1]); "
              "seq = np.array(eval(sys.argv[2]), np.int64); print(c.model.frequencies(seq).tolist())")
    p = subprocess.run([sys.executable, "-c", script, str(codec.path), repr(seq.tolist())], capture_output=True,
                       text=True, env=dict(os.environ, NUMBA_DISABLE_JIT="1"), timeout=300)
    assert p.returncode == 0, p.stderr
    assert np.array_equal(np.array(json.loads(p.stdout)), fast)


def test_torch_integer_runtime_gives_the_kernel_integers(family_codec):
    """The torch path (what a GPU host runs: float64 matmuls of small integers are exact) == numba kernel."""
    pytest.importorskip("torch")
    from nbmf.runtime.torch_int import TorchIntModel

    seq = np.random.default_rng(0).integers(0, family_codec.cfg.vocab_size, 90)
    want = family_codec.model.frequencies(seq)
    tm = TorchIntModel(family_codec.model, device=DEVICE)
    assert np.array_equal(tm.frequencies(seq), want)
    state = tm.new_state(3)
    rows = np.stack([tm.step(state, [seq[t]] * 3, [0, 1, 2]).cpu().numpy() for t in range(len(seq))])
    assert all(np.array_equal(rows[:, k], want) for k in range(3))


def _device_codec(codec, tokens: int, slots: int):
    """The codec on a torch device (CPU unless $NBMF_TEST_DEVICE: the code a GPU runs), with a small token budget
    (several encode passes, records longer than one pass) and few decode slots (refills, then narrowing)."""
    pytest.importorskip("torch")
    dev = load_codec(codec.path, device=DEVICE, threads=1)  # one host thread decodes the longest records
    dev.runtime.tokens, dev.runtime.slots = tokens, slots
    return dev


@pytest.mark.parametrize("host_threads", [0, 2])
def test_device_runtime_writes_and_reads_the_kernel_bytes(family_codec, val_items, host_threads):
    """Every family on the torch path: the kernel's bodies, both ways; damaged bodies stop as the kernel stops them."""
    pytest.importorskip("torch")
    items = sorted(val_items, key=lambda x: len(x[0]))[::5][:10] + [(b"", val_items[0][1])]
    assert max(len(family_codec.tokenizer.encode(raw)) for raw, _ in items) > 300  # a record longer than a pass
    assert_device_matches_kernel(family_codec, items, host_threads=host_threads)


def test_device_search_that_disagrees_with_the_coder_is_refused(val_items, monkeypatch):
    """A device whose table search lands outside the coder's interval (non-IEEE arithmetic) raises: no wrong token."""
    c = load_codec(ROOT / "models" / "v1")
    dev = _device_codec(c, tokens=4096, slots=4)
    dev.runtime.host_threads = 0  # every record on the device
    search = dev.runtime._search
    monkeypatch.setattr(dev.runtime, "_search", lambda f, q: search(f, q + (1 << 14)))  # the injected fault
    raw, kind = val_items[0]
    with pytest.raises(RuntimeError, match="disagree"):
        dev.decode_raw(c.encode_raw(raw, kind), kind, len(raw))
