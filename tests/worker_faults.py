"""Faults for the worker tests, importable by name in spawned worker processes (tests/ is on their sys.path)."""

from __future__ import annotations

import os

from harmowam_core.collect import ScriptedRecorder

FAIL_SEED = 2


class FailingRecorder(ScriptedRecorder):
    """The scripted recorder, except that the episode of FAIL_SEED raises (a simulator fault)."""

    def run(self, seed, on_step=None):
        if seed == FAIL_SEED:
            raise RuntimeError("the simulator became unstable")
        return super().run(seed, on_step)


class CrashingRecorder(ScriptedRecorder):
    """The scripted recorder, except that the process dies during the episode of FAIL_SEED (a native crash)."""

    def run(self, seed, on_step=None):
        if seed == FAIL_SEED:
            os._exit(3)
        return super().run(seed, on_step)


class Squares:
    """A trivial worker state: squares numbers; -1 kills its process (a crash in native code)."""

    def __init__(self, offset: int = 0):
        self.offset = offset

    def run(self, x: int) -> int:
        if x == -1:
            os._exit(3)
        if x == -2:
            raise ValueError("no square for -2")
        return x * x + self.offset
