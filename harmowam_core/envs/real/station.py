"""The real Franka station behind the `Env` protocol: arms, cameras, the control rate, safety and an operator.

    with RealStation(recipe, load_station_config()) as station:
        obs = station.reset()                 # the operator sets the scene; arms go home once confirmed
        obs = station.step(action)            # paced at the station's control rate, guarded by the watchdog
        station.end_episode()                 # stops the arms and asks the operator, stage by stage
        station.stage_success()

Actions and states are per arm [x, y, z, roll, pitch, yaw, gripper] as in the simulator, in each arm's base
frame; dual-arm actions are [left, right] in the order of the station file's arms. Every command goes
through the safety layer (`safety`: per-step, workspace box and step-to-step limits): a non-finite action
stops every arm and raises; a watchdog stops the arms when `step` is not called within `watchdog_s`; Ctrl-C
and any exception in `step` stop them too. A reflex (franky's `ControlException`) stops every arm, reports
one line (the arm, the step, franky's reason) and asks the operator (`confirm`): yes recovers the arm and
goes on at its `recovery_dynamics_factor` (for the rest of the session) from rest; no ends the episode
(`operator_ended`; the next `reset` asks again). The operator presses Enter during an episode to end it; one
thread reads the terminal (`operator.OperatorTerminal`), so a line typed while a question is pending answers it
and never ends the episode.
`dry_run=True` connects to nothing: the arms print what they would send and the cameras give black frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from harmowam_core.envs.base import Observation, Station
from harmowam_core.envs.commands import check_finite
from harmowam_core.envs.ood import check_protocol
from harmowam_core.envs.real.arm import DryRunArm, FrankyArm
from harmowam_core.envs.real.cameras import Camera, open_camera
from harmowam_core.envs.real.config import StationConfig
from harmowam_core.envs.real.operator import OperatorTerminal, ask_yes_no, stdin_terminal
from harmowam_core.envs.real.safety import Reflex, Watchdog
from harmowam_core.errors import HarmoWAMError


class RealStation(Station):
    def __init__(
        self,
        recipe,
        station: StationConfig,
        *,
        dry_run: bool = False,
        confirm: Callable[[str], bool] | None = None,
        echo: Callable[[str], None] = print,
        franky=None,
        rs=None,
        watch_enter: bool = True,
        terminal: OperatorTerminal | None = None,
    ):
        """`confirm(question) -> bool` asks the operator (default: y/n on the terminal). `terminal` is where the
        operator presses Enter to end an episode: given, it is used whatever `watch_enter` says; else stdin's
        (`operator.stdin_terminal`) when stdin is a terminal and `watch_enter`. A `confirm` that reads the
        terminal must read through it (`with terminal.asking(): Confirm.ask(q, stream=terminal)`): reading
        stdin directly would race it again. Ctrl-D or a closed terminal before an answer raises HarmoWAMError."""
        self.recipe, self.station, self.dry_run, self.echo = recipe, station, dry_run, echo
        self.terminal = terminal if terminal is not None else (stdin_terminal() if watch_enter else None)
        ask = confirm or (lambda question: ask_yes_no(question, self.terminal))  # the operator, on the terminal

        def confirm_(question: str) -> bool:
            try:
                return bool(ask(question))
            except EOFError as err:  # Ctrl-D, or the terminal is gone
                raise HarmoWAMError(f"no answer to '{question}': {err or 'end of input'}") from None

        self.confirm = confirm_
        self.instruction = recipe.instruction
        self.num_arms = recipe.num_arms
        self.stage_names = [s.name for s in recipe.stages]
        if len(station.arms) != self.num_arms:
            raise HarmoWAMError(
                f"{recipe.name} is a {recipe.arms}-arm task but {station.source} configures {len(station.arms)} arm(s)"
            )
        roles = {c.role for c in station.cameras}
        missing = [c.role for c in recipe.cameras if c.role not in roles]
        if missing and not dry_run:
            raise HarmoWAMError(f"{station.source} has no camera for the role(s) {', '.join(missing)}")
        self.period = 1.0 / station.control_hz
        self.arms = []
        self.cameras: dict[str, Camera] = {}
        try:
            for arm in station.arms:
                self.arms.append(DryRunArm(arm, echo) if dry_run else FrankyArm(arm, franky))
            if not dry_run:
                for cam in station.cameras:
                    if cam.role in {c.role for c in recipe.cameras}:
                        self.cameras[cam.role] = open_camera(cam, **({"rs": rs} if rs is not None else {}))
        except BaseException:
            self.close()
            raise
        self.watchdog = Watchdog(station.watchdog_s, self.stop)
        self.watchdog.__enter__()
        self._scores: list[bool] = [False] * len(self.stage_names)
        self.operator_ended = False
        self.steps = 0  # control steps of this episode
        self.reflexes = 0  # reflexes met since the station opened
        self._recovered = False
        self._next_tick = 0.0

    # ------------------------------------------------------------------ protocol
    def reset(self, seed: int | None = None, ood: str = "none") -> Observation:
        check_protocol(ood)
        scene = "" if ood == "none" else f" ({ood} OOD: set the scene up accordingly)"
        self.watchdog.disarm()  # homing is one long motion without steps
        if not self.confirm(f"set the scene for '{self.recipe.name}'{scene}; send the arms home?"):
            raise HarmoWAMError("the operator did not confirm the reset")
        for arm in self.arms:
            try:
                if arm.faulted:  # a reflex the operator did not recover from during the last episode
                    raise Reflex(arm.config.name, "stopped after a reflex")
                arm.home()
            except Exception as err:  # noqa: BLE001 - a reflex or error state: recovery needs the operator
                self.echo(f"{arm.config.name} arm: {err}")
                if not arm.recover(self.confirm):
                    raise HarmoWAMError(
                        f"the {arm.config.name} arm is in an error state and was not recovered"
                    ) from None
                arm.home()
        self._scores = [False] * len(self.stage_names)
        self.operator_ended = False
        self._recovered = False  # an arm was recovered from a reflex since the last observation
        self.steps = 0
        if self.terminal is not None:
            self.terminal.end_requested.clear()  # an Enter before the episode began does not end it
        self._next_tick = time.monotonic() + self.period
        return self._observation()  # the watchdog arms with the first step

    def step(self, action: np.ndarray, images: bool = True) -> Observation:
        """One paced control step; the cameras are read whatever `images` says (frames keep streaming)."""
        self.watchdog.feed()
        self.steps += 1
        try:
            action = check_finite(action, 7 * self.num_arms)
            for k, arm in enumerate(self.arms):
                arm.command(action[7 * k : 7 * k + 7])
        except Reflex as reflex:
            self.stop()
            self._after_reflex(reflex)
        except BaseException:
            self.stop()
            raise
        delay = self._next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next_tick = max(self._next_tick, time.monotonic()) + self.period
        self.operator_ended = self.operator_ended or (
            self.terminal is not None and self.terminal.end_requested.is_set()
        )
        return self._observation()

    def stage_success(self) -> list[bool]:
        return list(self._scores)

    def end_episode(self) -> list[bool]:
        """Stop the arms and ask the operator, stage by stage (stages are sequential: the first 'no' ends it)."""
        self.watchdog.disarm()
        self.stop()
        scores = []
        for name, spec in zip(self.stage_names, self.recipe.stages, strict=True):
            ok = bool(scores[-1]) if scores else True
            ok = ok and self.confirm(f"stage '{name}' reached? ({spec.success})")
            scores.append(ok)
        self._scores = scores
        return scores

    def stop(self) -> None:
        for arm in self.arms:
            arm.stop()

    def close(self) -> None:
        self.stop()
        if getattr(self, "watchdog", None) is not None:
            self.watchdog.__exit__(None, None, None)
            self.watchdog = None
        for cam in self.cameras.values():
            cam.stop()
        self.cameras = {}

    def __enter__(self) -> RealStation:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _after_reflex(self, reflex: Reflex) -> None:
        """Every arm is stopped: report, then recover at reduced dynamics or end the episode, as the operator
        says. No command is sent in between."""
        self.reflexes += 1
        self.watchdog.disarm()  # the operator takes their time; no steps come meanwhile
        self.echo(f"reflex at step {self.steps}: {reflex}; every arm stopped")
        arm = next(a for a in self.arms if a.config.name == reflex.arm)
        if arm.recover(self.confirm):
            self._recovered = True  # the next observation says so: the actor plans afresh from where the arm is
            self._next_tick = time.monotonic()  # the pause is not a late step
            self.watchdog.feed()  # back in the episode: the next step is due within the deadline
        else:
            self.operator_ended = True
            self.echo(f"episode ended at step {self.steps}: the {reflex.arm} arm was not recovered")

    def _observation(self) -> Observation:
        images = {}
        for cam in self.recipe.cameras:
            if self.dry_run:
                images[cam.role] = np.zeros((cam.height, cam.width, 3), dtype=np.uint8)
            else:
                frame = self.cameras[cam.role].latest(max_age=max(2 * self.period, 0.1))
                images[cam.role] = _resize(frame, cam.height, cam.width)
        state = np.concatenate([arm.state() for arm in self.arms]).astype(np.float32)
        info = {"dry_run": self.dry_run, "recovered": self._recovered}
        self._recovered = False
        return Observation(images, state, self.instruction, info=info)


def _resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    if frame.shape[:2] == (height, width):
        return frame
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))
