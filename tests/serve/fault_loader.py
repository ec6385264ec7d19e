"""Fault injection for the Serve tests: the real neural loader, made to fail while ``<model_dir>/FAULT``
exists, to stall (``<model_dir>/SLOW`` holds the seconds) so that requests time out, and to block while
``<model_dir>/HOLD`` exists (a stall that the test ends, not a clock). While ``<model_dir>/CALLS`` exists,
each call appends a line to it first, so a test can see that a call started and count the attempts.

Serve replicas import it by path (``loader="tests.serve.fault_loader:load"``); Ray workers start in
the driver's working directory (the repository root), so the module is importable there.
"""
from __future__ import annotations

import time
from pathlib import Path

from serve.codec_ops import load_codec

FAULT = "FAULT"
SLOW = "SLOW"
HOLD = "HOLD"
CALLS = "CALLS"


class InjectedFault(RuntimeError):
    pass


def _check(path: Path) -> None:
    calls = path.with_name(CALLS)
    if calls.exists():
        with calls.open("a") as f:
            f.write("call\n")
    while path.with_name(HOLD).exists():
        time.sleep(0.05)
    if path.exists():
        raise InjectedFault(f"injected fault ({path})")
    slow = path.with_name(SLOW)
    if slow.exists():
        time.sleep(float(slow.read_text()))


class FaultyCodec:
    """Delegates to the real codec; every call first checks the fault flag (so a loaded model fails too)."""

    def __init__(self, codec, fault: Path):
        self._codec, self._fault = codec, fault

    def __getattr__(self, name):
        attr = getattr(self._codec, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            _check(self._fault)
            return attr(*args, **kwargs)

        return call


def load(model_dir: str, version: str):
    fault = Path(model_dir) / FAULT
    _check(fault)
    return FaultyCodec(load_codec(model_dir, version), fault)
