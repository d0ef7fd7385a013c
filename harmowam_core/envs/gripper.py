"""Gripper hysteresis shared by the simulated and the real station: a continuous command in [0, 1] becomes
open or closed, changing only past the far threshold.

    hysteresis = GripperHysteresis(close_above=0.6, open_below=0.4)
    closed = hysteresis.update(0.7)      # True: closes; 0.45 later keeps it closed, 0.35 opens it

Why both stations need it (issue 19, cause 4): robosuite integrates the sign of the finger command, so a
command of 0.49 sent as `2a - 1` opens a closed grasp within ten steps and drops the object, while the real
station's 0.4/0.6 hysteresis holds it. A router averaging two experts, or an expert unsure between open and
closed, produces exactly such values. Hysteresis alone does not stop a command that jumps between 0 and 1
every step; `min_hold` (the real station's `gripper.min_hold_steps`) keeps each grasp or opening for at least
that many updates, so the fingers finish a motion before the next one starts.
"""

from __future__ import annotations

import math

CLOSE_ABOVE = 0.6
OPEN_BELOW = 0.4


class GripperHysteresis:
    """Open/closed from a continuous command, changing only past the far threshold, so a flickering output
    around 0.5 does not chatter the fingers, and at most once per `min_hold` updates (1: no hold), so one
    that flips between 0 and 1 does not either. `update` raises `ValueError` on a non-finite command."""

    def __init__(
        self,
        close_above: float = CLOSE_ABOVE,
        open_below: float = OPEN_BELOW,
        closed: bool = False,
        min_hold: int = 1,
    ):
        if not 0.0 <= open_below < close_above <= 1.0:
            raise ValueError("need 0 <= open_below < close_above <= 1")
        if min_hold < 1:
            raise ValueError("need min_hold >= 1")
        self.close_above, self.open_below, self.min_hold = close_above, open_below, min_hold
        self.reset(closed)

    def reset(self, closed: bool = False) -> None:
        """Start over in the given state, free to change at the next update (after homing, a new episode)."""
        self.closed, self.held = closed, self.min_hold

    def update(self, command: float) -> bool:
        command = float(command)
        if not math.isfinite(command):
            raise ValueError(f"non-finite gripper command rejected: {command}")
        self.held += 1
        if self.held > self.min_hold:
            wanted = command > self.close_above if not self.closed else not command < self.open_below
            if wanted != self.closed:
                self.closed, self.held = wanted, 1
        return self.closed
