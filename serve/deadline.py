"""Codec work off a replica's event loop, answered by a deadline.

A replica's asyncio loop serves health checks, pings and every other request; a codec call that runs on it
(hundreds of milliseconds for a large record, minutes for a hostile one before the codec refused those) stalls
all of them. So each replica runs its codec calls on one worker thread of its own and awaits them with a
deadline. One thread, not a pool: calls ran one at a time on the loop before, a codec object is not meant to
be shared between threads (the neural codec sizes its own worker pool lazily), and the replica reserves only
the CPUs that one call's ``threads`` use.

A thread cannot be stopped: a call past its deadline is answered (``DeadlineExceeded``) and keeps running
until the codec returns; calls queued behind it that pass their own deadline are cancelled before they start.

>>> import asyncio
>>> asyncio.run(CodecThread(1.0, "doctest").run(sum, [1, 2, 3]))
6
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class DeadlineExceeded(TimeoutError):
    """A codec call did not finish within ``timeouts.codec_s`` (HTTP 504; never retried, never a fallback
    for decode)."""


class CodecThread:
    def __init__(self, deadline_s: float, name: str):
        self.deadline_s = deadline_s
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)

    async def run(self, fn: Callable, *args):
        """``fn(*args)`` on the worker thread; DeadlineExceeded once ``deadline_s`` has passed since the call
        was queued (waiting behind another call counts: the deadline is the caller's, not the codec's)."""
        future = asyncio.wrap_future(self._pool.submit(fn, *args))
        try:
            return await asyncio.wait_for(future, self.deadline_s)
        except asyncio.TimeoutError:
            if not future.cancelled():  # fn raised TimeoutError itself
                raise
            # wait_for cancelled the future: a call that had not started never will
            raise DeadlineExceeded(f"the codec did not finish within the service's deadline of {self.deadline_s:g} s "
                                   "(timeouts.codec_s)") from None
