"""Gripper hysteresis shared by the simulated and the real station: a continuous command in [0, 1] becomes
open or closed, changing only past the far threshold.

    hysteresis = GripperHysteresis(close_above=0.6, open_below=0.4)
    closed = hysteresis.update(0.7)      # True: closes; 0.45 later keeps it closed, 0.35 opens it

Why both stations need it (issue 19, cause 4): robosuite integrates the sign of the finger command, so a
command of 0.49 sent as `2a - 1` opens a closed grasp within ten steps and drops the object, while the real
station's 0.4/0.6 hysteresis holds it. A router averaging two experts, or an expert unsure between open and
closed, produces exactly such values.
"""

from __future__ import annotations

import math

CLOSE_ABOVE = 0.6
OPEN_BELOW = 0.4


class GripperHysteresis:
    """Open/closed from a continuous command, changing only past the far threshold, so a flickering output
    around 0.5 does not chatter the fingers. `update` raises `ValueError` on a non-finite command."""

    def __init__(self, close_above: float = CLOSE_ABOVE, open_below: float = OPEN_BELOW, closed: bool = False):
        if not 0.0 <= open_below < close_above <= 1.0:
            raise ValueError("need 0 <= open_below < close_above <= 1")
        self.close_above, self.open_below, self.closed = close_above, open_below, closed

    def update(self, command: float) -> bool:
        command = float(command)
        if not math.isfinite(command):
            raise ValueError(f"non-finite gripper command rejected: {command}")
        if not self.closed and command > self.close_above:
            self.closed = True
        elif self.closed and command < self.open_below:
            self.closed = False
        return self.closed
