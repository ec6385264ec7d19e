"""Run a function with the caller's Python stack already deep, as inside a Ray Serve replica or a migration."""
from __future__ import annotations

import sys


def stack_depth() -> int:
    """Frames on the current thread's Python stack."""
    frame, n = sys._getframe(1), 0
    while frame is not None:
        frame, n = frame.f_back, n + 1
    return n


def deep_call(fn, headroom: int = 100):
    """``fn()`` called with only ``headroom`` frames left under the recursion limit (900 deep by default)."""
    target = sys.getrecursionlimit() - headroom

    def down(n):
        return down(n - 1) if n > 0 else fn()

    return down(max(0, target - stack_depth()))
