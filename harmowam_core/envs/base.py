"""The Env protocol every station implements, simulated or real.

    with make_env(recipe) as env:                       # sim by default
        obs = env.reset(seed=0, ood="none")             # Observation
        obs = env.step(action)                          # action: (7,) single arm, (14,) dual [left, right]
        obs = env.step(action, images=False)            # a step whose images nobody reads (obs.images may be {})
        env.stage_success()                             # [True, False]: stages reached so far, in order

Actions per arm are [dx, dy, dz, droll, dpitch, dyaw, gripper]: a translation in metres and an extrinsic
xyz Euler rotation in radians, both in the table frame, and the gripper command (0 open, 1 closed).
The state per arm is [x, y, z, roll, pitch, yaw, gripper]: the end-effector position in the table frame
(origin at the centre of the table top, x away from the robot, z up), its orientation as Euler angles of the
rotation away from the station's home orientation (gripper pointing down), and how closed the gripper is
(0 open, 1 closed). Stage success is sequential: a stage counts only once every earlier stage has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Observation:
    images: dict[str, np.ndarray]  # camera role -> (H, W, 3) uint8
    state: np.ndarray  # (7,) or (14,) float32
    instruction: str
    info: dict = field(default_factory=dict)  # station extras (sim: the step count), never model input


@runtime_checkable
class Env(Protocol):
    """A station: the simulator or a real robot. Use it as a context manager so `close` always runs.

    The whole contract: what every caller (collect, the rollout of eval and deploy, teleoperation) may use.
    `Station` gives the defaults a station without operator or arms to halt needs."""

    instruction: str
    num_arms: int
    stage_names: list[str]
    operator_ended: bool  # the operator ended the episode (the real station's Enter key); always False in sim

    def reset(self, seed: int | None = None, ood: str = "none") -> Observation: ...

    def step(self, action: np.ndarray, images: bool = True) -> Observation:
        """Execute one action and observe. `images=False` says that nobody reads this observation's images: a
        station may then leave `images` empty (the simulator skips rendering, most of a CPU step's time); the
        real station reads its cameras anyway."""
        ...

    def stage_success(self) -> list[bool]: ...

    def end_episode(self) -> list[bool]:
        """The episode is over: stop moving and return the final stage results (the real station asks the
        operator to score them)."""
        ...

    def stop(self) -> None:
        """Halt every arm now (an error or Ctrl-C mid-episode); a no-op where nothing moves on its own."""
        ...

    def confirm(self, question: str) -> bool:
        """Ask the operator a yes/no question (set the scene, keep an episode); True where there is none."""
        ...

    def expert(self, seed: int | None = None):
        """The task's scripted expert for this scene (an actor with `act(obs)`), from privileged state: the
        simulator has one; a station without raises `HarmoWAMError`."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Env: ...

    def __exit__(self, *exc) -> None: ...


class Station:
    """Defaults of the `Env` contract for a station with no operator: nothing to halt, nothing to ask, the
    stages as the station scores them, no scripted expert. Stations (and test doubles) subclass it."""

    operator_ended = False

    def end_episode(self) -> list[bool]:
        return self.stage_success()

    def stop(self) -> None:
        return None

    def confirm(self, question: str) -> bool:
        return True

    def expert(self, seed: int | None = None):
        from harmowam_core.errors import HarmoWAMError

        raise HarmoWAMError(f"the {type(self).__name__} station has no scripted expert (the simulator has)")

    def close(self) -> None:
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
