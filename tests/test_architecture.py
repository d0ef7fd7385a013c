"""The dependency directions the layout promises (README, Architecture), checked in fresh interpreters: the
closed-loop policy loads nothing of training, the real station nothing of the simulator, the data layer no
model."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("harmowam_core.policy.policy", "harmowam_core.training"),
        ("harmowam_core.envs.real.station", "harmowam_core.envs.sim"),
        ("harmowam_core.data.reader", "harmowam_core.models"),
        ("harmowam_core.data.writer", "harmowam_core.training"),
    ],
)
def test_a_module_does_not_load_what_it_must_not_depend_on(module, forbidden):
    code = (
        f"import sys, {module}\n"
        f"bad = sorted(m for m in sys.modules if m == {forbidden!r} or m.startswith({forbidden!r} + '.'))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"{module} loads {out}"
