"""Hostile-input plumbing without Ray: the codec deadline, batch budgets, error statuses, strict JSON."""
from __future__ import annotations

import asyncio
import json
import threading

import pytest
from pydantic import ValidationError

from nbmf import blob as nbmf_blob
from nbmf import errors
from nbmf.modeldir import ModelDirError
from serve import codec_ops
from serve.args import AppArgs, Timeouts
from serve.deadline import CodecThread, DeadlineExceeded
from serve.http import ERROR_STATUS, ApiError, check_count, json_response, parse_json, validate
from serve.schemas import DecodeBatchRequest
from tests.serve.forge import forged, stub_json_blob

# -- the codec thread ---------------------------------------------------------------------------------

def test_codec_thread_answers_past_the_deadline_while_the_loop_runs_on():
    release, started = threading.Event(), threading.Event()

    def stuck():
        started.set()
        release.wait()  # blocks until the test lets go: the deadline, not the call, must end the wait
        return "late"

    async def main():
        runner = CodecThread(0.2, "test")
        ticks = 0

        async def ticker():  # runs only if the event loop is free while the codec thread is stuck
            nonlocal ticks
            while not started.is_set() or ticks < 3:
                ticks += 1
                await asyncio.sleep(0.01)

        tick = asyncio.create_task(ticker())
        with pytest.raises(DeadlineExceeded, match=r"deadline of 0.2 s \(timeouts.codec_s\)"):
            await runner.run(stuck)
        await tick
        queued = asyncio.create_task(runner.run(pytest.fail, "a call queued past its deadline must never start"))
        with pytest.raises(DeadlineExceeded):
            await queued
        release.set()
        assert await runner.run(lambda: "next") == "next"  # the thread is free again once the stuck call returns
        return ticks

    assert asyncio.run(main()) >= 3


def test_codec_thread_passes_results_and_errors_through():
    async def main():
        runner = CodecThread(5.0, "test")
        assert await runner.run(sum, [1, 2]) == 3
        with pytest.raises(errors.CorruptBlobError):
            await runner.run(nbmf_blob.unpack, b"\x40")
        with pytest.raises(TimeoutError) as info:  # the function's own TimeoutError is not a deadline
            await runner.run(_raise, TimeoutError("socket"))
        assert not isinstance(info.value, DeadlineExceeded)

    asyncio.run(main())


def _raise(e):
    raise e


def test_codec_deadline_must_be_below_the_decode_timeout():
    assert AppArgs().timeouts.codec_s < AppArgs().timeouts.decode_s
    with pytest.raises(ValidationError, match="codec_s"):
        Timeouts(decode_s=2.0, codec_s=2.0)


# -- what each failure answers ---------------------------------------------------------------------------

def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


MODEL_SIDE = (errors.ArtifactError, ModelDirError)  # a model that cannot load (and subclasses): retried, then 503
CLIENT_SIDE = (errors.ServiceError,)  # nbmf.client's name for the service's answer: never raised inside the service


@pytest.mark.parametrize("cls", sorted({c for c in _subclasses(errors.NBMFError)
                                        if not issubclass(c, MODEL_SIDE + CLIENT_SIDE)}, key=lambda c: c.__name__))
def test_every_blob_error_has_a_client_status(cls):
    """A failure the blob or payload causes is a 4xx (answered once); only the model's own failures retry."""
    assert 400 <= ERROR_STATUS[cls.__name__] < 500


def test_statuses_of_the_service_own_failures():
    assert ERROR_STATUS["DeadlineExceeded"] == 504
    assert ERROR_STATUS["PayloadError"] == ERROR_STATUS["UnrepresentablePayload"] == 422


class _Raising:
    """A registry whose decode raises ``error`` (the library's failure modes, one at a time)."""

    def __init__(self, error: Exception):
        self.error = error

    def decode_many(self, blobs, max_output_size):
        raise self.error

    def decode_result(self, blob, max_output_size):
        raise self.error


@pytest.mark.parametrize("error, name", [
    (errors.CorruptBlobError("damaged"), "CorruptBlobError"),
    (errors.PayloadError("too deep"), "PayloadError"),
    (ValueError("Exceeds the limit (4300 digits) for integer string conversion"), "UndecodableBlob"),
    (RecursionError("maximum recursion depth exceeded"), "UndecodableBlob"),
])
def test_blob_failures_become_outcomes(error, name):
    (out,) = codec_ops.decode_items(_Raising(error), [b"blob"], 100)
    assert out.error == name and out.message and 400 <= ERROR_STATUS[name] < 500


@pytest.mark.parametrize("error", [errors.ArtifactError("hashes differ"), RuntimeError("replica bug")])
def test_model_failures_stay_exceptions(error):
    """Not the blob's fault: the model replica raises, and the ingress retries (then 503)."""
    with pytest.raises(type(error)):
        codec_ops.decode_items(_Raising(error), [b"blob"], 100)


def test_hostile_stub_blobs_are_client_errors():
    """Deep nesting or a 5,000-digit integer inside a stub blob: an outcome with a 4xx, never an exception."""
    registry = codec_ops.stub_registry()
    hostile = [stub_json_blob(b"[" * 100_000 + b"]" * 100_000), stub_json_blob(b"1" * 5000)]
    good = stub_json_blob(b'{"a": 1}')
    outs = codec_ops.decode_items(registry, [*hostile, good], 1 << 20)
    assert [400 <= ERROR_STATUS[o.error] < 500 for o in outs[:2]] == [True, True]
    assert outs[2].error is None and outs[2].payload == {"a": 1}


# -- batch budgets ---------------------------------------------------------------------------------------

def test_claimed_output_is_read_from_the_header_alone():
    assert codec_ops.claimed_output(forged(10**7)) == 10**7  # the body cannot produce it: nothing was decoded


def test_claimed_output_of_legacy_blobs_is_their_code(make_legacy_blob):
    semantic = make_legacy_blob("word " * 100, "semantic")
    lossless = make_legacy_blob("a" * 50_000)
    assert codec_ops.claimed_output(semantic) == len(semantic["code"]) // 2 == len(" ".join(("word " * 100).split()))
    assert codec_ops.claimed_output(json.dumps(lossless).encode()) == len(lossless["code"]) // 2 < 1000
    with pytest.raises(errors.FormatError):
        codec_ops.claimed_output({"meta": {}})


@pytest.mark.parametrize("claims, spare, cap", [([10, 20, 30], 1000, 1 << 20), ([10] * 256, 5, 64), ([0], 0, 10),
                                                ([100, 5], 10_000, 300)])
def test_legacy_limits_keep_the_batch_within_its_budget(claims, spare, cap):
    limits = codec_ops.legacy_limits(claims, spare, cap)
    assert sum(limits) <= sum(claims) + spare
    assert all(min(c, cap) <= lim <= cap for c, lim in zip(claims, limits))


def test_legacy_blob_past_its_share_fails_alone(make_legacy_blob):
    registry = codec_ops.stub_registry()
    small, bomb = make_legacy_blob("fits"), make_legacy_blob("a" * 100_000)  # the bomb claims ~200 bytes
    claims = [codec_ops.claimed_output(b) for b in (small, bomb)]
    limits = codec_ops.legacy_limits(claims, spare=10_000, max_output_size=1 << 20)
    outs = codec_ops.decode_each(registry, [small, bomb], limits)
    assert outs[0].payload == "fits" and outs[1].error == "OutputTooLargeError"
    assert codec_ops.decode_each(registry, [bomb], [1 << 20])[0].payload == "a" * 100_000  # alone it decodes


def test_input_size_is_the_raw_payload():
    assert codec_ops.input_size(("héllo", "text", "lossless")) == 6
    assert codec_ops.input_size(({"a": [1]}, "json", "lossless")) == len(json.dumps({"a": [1]}, ensure_ascii=False))
    assert codec_ops.input_size((b"\x00" * 7, "bytes", "lossless")) == 7


def test_batch_item_count_is_refused_before_validation():
    data = {"blobs": [1] * 100_000}  # 100,000 schema errors if validated first
    with pytest.raises(ApiError) as info:
        check_count(data, "blobs", 256)
    assert info.value.status == 413 and "100000" in info.value.detail
    check_count({"blobs": ["x"] * 256}, "blobs", 256)
    with pytest.raises(ApiError) as info:  # and a schema error report stays short
        validate(DecodeBatchRequest, {"blobs": [1] * 1000})
    assert info.value.status == 422 and info.value.detail.endswith(" more errors") and len(info.value.detail) < 2000


# -- strict JSON -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"", b"{", b"NaN", b'{"payload": Infinity}', b'{"payload": -Infinity}', b'{"payload": 1e999}',
    b'{"payload": ' + b"9" * 5000 + b"}", b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe\xfd", b'{"a": "\xc3"}',
])
def test_request_json_is_strict(body):
    with pytest.raises(ApiError) as info:
        parse_json(body)
    assert info.value.status == 400 and info.value.detail


def test_request_json_accepts_what_json_allows():
    assert parse_json(b'{"x": [1.5e300, -0.0, 12345678901234567890, "\\ud800"]}') == {
        "x": [1.5e300, -0.0, 12345678901234567890, "\ud800"]}


@pytest.mark.parametrize("payload", [float("nan"), [1, float("inf")], {"a": -float("inf")}])
def test_unrepresentable_response_is_422(payload):
    with pytest.raises(ApiError) as info:
        json_response({"payload": payload})
    assert info.value.status == 422 and info.value.error == "UnrepresentablePayload"
    assert json_response({"payload": "fine \ud800"}).body == b'{"payload":"fine \\ud800"}'
