"""The station configuration: per arm its FCI host, home pose, workspace box and limits; per camera its serial.

    station = load_station_config("station.yaml")       # or the default location, ~/.config/harmowam/station.yaml
    station.arms[0].workspace.clamp(point)

```yaml
control_hz: 20
watchdog_s: 0.25            # the arm stops when no new command arrives within this
arms:
  - name: right
    host: 172.16.0.2        # the arm's FCI address (tests and examples use 127.0.0.1)
    home: {position: [0.45, 0.0, 0.35], euler: [3.14159, 0.0, 0.0]}
    workspace: {min: [0.25, -0.35, 0.02], max: [0.75, 0.35, 0.55]}
    max_translation: 0.02   # metres per control step
    max_rotation: 0.1       # radians per control step
    max_translation_change: 0.01  # metres per step, step to step (default: half of max_translation)
    max_rotation_change: 0.05     # radians per step, step to step (default: half of max_rotation)
    relative_dynamics_factor: 0.1
    recovery_dynamics_factor: 0.05  # after a reflex the operator confirmed (default: half of the above)
    collision_torque: [20, 20, 18, 18, 16, 14, 12]
    collision_force: [20, 20, 20, 25, 25, 25]
    gripper: {speed: 0.05, force: 20.0, open_width: 0.08, close_above: 0.6, open_below: 0.4, min_hold_steps: 10}
cameras:
  - {serial: "123456789012", role: front, width: 640, height: 480, fps: 30}
```

Positions are metres in the arm's base frame; Euler angles are extrinsic xyz (as in the simulator).
"""

from __future__ import annotations

import re
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from harmowam_core.config.validation import Invalid, located
from harmowam_core.errors import HarmoWAMError

DEFAULT_PATH = Path("~/.config/harmowam/station.yaml")
ROLES = ("front", "top", "wrist", "global", "wrist_left", "wrist_right")

# Lax pydantic (a number may be written "0.1", a serial or host unquoted), unknown keys and inf/nan are errors.
SCHEMA = ConfigDict(extra="forbid", coerce_numbers_to_str=True, allow_inf_nan=False)


class StationConfigError(HarmoWAMError):
    pass


def _length(n: int) -> AfterValidator:
    def check(value: list[float]) -> list[float]:
        if len(value) != n:
            raise Invalid(f"expected {n} finite numbers", value)
        return value

    return AfterValidator(check)


def _at_most(upper: float) -> AfterValidator:
    """A number in (0, upper]."""

    def check(value: float) -> float:
        if not 0 < value <= upper:
            raise Invalid(f"expected a number above 0 and at most {upper}", value)
        return value

    return AfterValidator(check)


Vector3 = Annotated[list[float], _length(3)]


def _null_is(default: Any) -> BeforeValidator:
    """An empty YAML section (`gripper:`) is its default."""
    return BeforeValidator(lambda value: default() if value is None else value)


@dataclass(config=SCHEMA)
class Box:
    min: Vector3
    max: Vector3

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if not np.all(np.asarray(self.min) < np.asarray(self.max)):
            raise Invalid("expected every min below its max", {"min": self.min, "max": self.max})
        return self

    def clamp(self, point: np.ndarray) -> np.ndarray:
        return np.clip(point, self.min, self.max)

    def contains(self, point: np.ndarray) -> bool:
        return bool(np.all(point >= np.asarray(self.min)) and np.all(point <= np.asarray(self.max)))


@dataclass(config=SCHEMA)
class GripperConfig:
    speed: float = 0.05  # m/s
    force: float = 20.0  # N, when grasping
    open_width: float = 0.08  # m
    close_above: float = 0.6  # a command above this closes an open gripper ...
    open_below: float = 0.4  # ... and one below this opens a closed one: between, nothing changes
    min_hold_steps: Annotated[int, _at_most(1000)] = 10  # control steps a grasp or an opening holds at least

    @model_validator(mode="after")
    def _hysteresis(self) -> GripperConfig:
        if not 0.0 <= self.open_below < self.close_above <= 1.0:
            got = {"open_below": self.open_below, "close_above": self.close_above}
            raise Invalid("expected 0 <= open_below < close_above <= 1", got)
        return self


@dataclass(config=SCHEMA)
class Home:
    position: Vector3
    euler: Vector3 = field(default_factory=lambda: [np.pi, 0.0, 0.0])


def _derived(config: Any, key: str, upper_key: str) -> float:
    """The limit `key` of `config`, derived from the one at `upper_key`: null is half of it, more is an error."""
    value, upper = getattr(config, key), getattr(config, upper_key)
    if value is None:
        return upper / 2
    if value > upper:
        raise Invalid(f"expected at most {upper_key} ({upper})", value, key)
    return value


@dataclass(config=SCHEMA)
class ArmConfig:
    host: str
    home: Home
    workspace: Box
    name: str = ""  # empty: arm<i>, its place in the station's list
    max_translation: Annotated[float, _at_most(0.1)] = 0.02
    max_rotation: Annotated[float, _at_most(0.5)] = 0.1
    # the change of the step's translation (m) and rotation (rad) from one control step to the next: an
    # acceleration limit (null: half the per-step limit, so a full reversal takes four steps)
    max_translation_change: Annotated[float, _at_most(0.1)] | None = None
    max_rotation_change: Annotated[float, _at_most(0.5)] | None = None
    relative_dynamics_factor: Annotated[float, _at_most(1.0)] = 0.1
    # the dynamics an arm continues at once the operator confirmed its recovery from a reflex (null: half)
    recovery_dynamics_factor: Annotated[float, _at_most(1.0)] | None = None
    collision_torque: Annotated[list[float], _length(7)] = field(default_factory=lambda: [20.0] * 7)
    collision_force: Annotated[list[float], _length(6)] = field(default_factory=lambda: [20.0] * 6)
    gripper: Annotated[GripperConfig, _null_is(GripperConfig)] = field(default_factory=GripperConfig)

    @model_validator(mode="after")
    def _home_in_workspace(self) -> ArmConfig:
        if not self.workspace.contains(np.asarray(self.home.position)):
            raise Invalid("lies outside the workspace box", self.home.position, "home.position")
        return self

    @model_validator(mode="after")
    def _derive_unset_limits(self) -> ArmConfig:
        """The limits left null: the step-to-step limits half the per-step ones, recovery half the dynamics."""
        self.max_translation_change = _derived(self, "max_translation_change", "max_translation")
        self.max_rotation_change = _derived(self, "max_rotation_change", "max_rotation")
        self.recovery_dynamics_factor = _derived(self, "recovery_dynamics_factor", "relative_dynamics_factor")
        return self

    @property
    def home_position(self) -> list[float]:
        return self.home.position

    @property
    def home_euler(self) -> list[float]:
        return self.home.euler


def _camera_backend(name: str) -> str:
    from harmowam_core.envs.real.cameras import camera_backends  # the package imports this module

    if name not in camera_backends():
        raise Invalid("expected a camera backend: " + ", ".join(camera_backends()), name)
    return name


@dataclass(config=SCHEMA)
class CameraConfig:
    serial: str
    role: Literal[ROLES]
    backend: Annotated[str, AfterValidator(_camera_backend)] = "realsense"  # the module of envs/real/cameras/
    width: int = 640
    height: int = 480
    fps: int = 30


def _one_or_two(arms: list[ArmConfig]) -> list[ArmConfig]:
    if len(arms) not in (1, 2):
        raise Invalid("expected one or two arms", len(arms))
    for i, arm in enumerate(arms):
        arm.name = arm.name or f"arm{i}"
    if len({arm.name for arm in arms}) < len(arms):
        raise Invalid("expected a unique name for each arm", arms[-1].name)
    return arms


@dataclass(config=SCHEMA)
class StationConfig:
    arms: Annotated[list[ArmConfig], AfterValidator(_one_or_two)]
    cameras: Annotated[list[CameraConfig], _null_is(list)] = field(default_factory=list)
    control_hz: Annotated[int, _at_most(1000)] = 20
    watchdog_s: Annotated[float, _at_most(5.0)] = 0.25
    source: str = field(default="<memory>", init=False)


def station_config_from_data(data: Any, source: str = "<memory>") -> StationConfig:
    """Validate plain data (a parsed station file); a mistake raises StationConfigError naming `source`, the key
    (arms[0].workspace) and what was expected."""
    if not isinstance(data, dict) or not data.get("arms"):
        raise StationConfigError(f"{source}: a station needs an 'arms' list")
    try:
        station = TypeAdapter(StationConfig).validate_python(data)
    except ValidationError as err:
        key, expected, got, show = located(err, StationConfig)
        where = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)  # arms.0.home -> arms[0].home
        tail = f", got {got!r}" if show and got is not None else ""
        raise StationConfigError(f"{source}: {where}: {expected}{tail}") from None
    station.source = source
    return station


def load_station_config(path: str | Path | None = None) -> StationConfig:
    """The station file at `path`, or at the default location."""
    path = Path(path or DEFAULT_PATH).expanduser()
    if not path.is_file():
        raise StationConfigError(f"no station configuration at {path}: write one (see the README) or pass --station")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise StationConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
    return station_config_from_data(data, str(path))
