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
    relative_dynamics_factor: 0.1
    collision_torque: [20, 20, 18, 18, 16, 14, 12]
    collision_force: [20, 20, 20, 25, 25, 25]
    gripper: {speed: 0.05, force: 20.0, open_width: 0.08, close_above: 0.6, open_below: 0.4}
cameras:
  - {serial: "123456789012", role: front, width: 640, height: 480, fps: 30}
```

Positions are metres in the arm's base frame; Euler angles are extrinsic xyz (as in the simulator).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from harmowam_core.errors import HarmoWAMError

DEFAULT_PATH = Path("~/.config/harmowam/station.yaml")
ROLES = ("front", "top", "wrist", "global", "wrist_left", "wrist_right")


class StationConfigError(HarmoWAMError):
    pass


@dataclass
class Box:
    min: list[float]
    max: list[float]

    def clamp(self, point: np.ndarray) -> np.ndarray:
        return np.clip(point, self.min, self.max)

    def contains(self, point: np.ndarray) -> bool:
        return bool(np.all(point >= np.asarray(self.min)) and np.all(point <= np.asarray(self.max)))


@dataclass
class GripperConfig:
    speed: float = 0.05  # m/s
    force: float = 20.0  # N, when grasping
    open_width: float = 0.08  # m
    close_above: float = 0.6  # a command above this closes an open gripper ...
    open_below: float = 0.4  # ... and one below this opens a closed one: between, nothing changes


@dataclass
class ArmConfig:
    name: str
    host: str
    home_position: list[float]
    home_euler: list[float]
    workspace: Box
    max_translation: float = 0.02
    max_rotation: float = 0.1
    relative_dynamics_factor: float = 0.1
    collision_torque: list[float] = field(default_factory=lambda: [20.0] * 7)
    collision_force: list[float] = field(default_factory=lambda: [20.0] * 6)
    gripper: GripperConfig = field(default_factory=GripperConfig)


@dataclass
class CameraConfig:
    serial: str
    role: str
    width: int = 640
    height: int = 480
    fps: int = 30


@dataclass
class StationConfig:
    arms: list[ArmConfig]
    cameras: list[CameraConfig]
    control_hz: int = 20
    watchdog_s: float = 0.25
    source: str = "<memory>"


def _numbers(value, n: int, where: str) -> list[float]:
    try:
        out = [float(x) for x in value]
    except (TypeError, ValueError):
        raise StationConfigError(f"{where}: expected {n} numbers, got {value!r}") from None
    if len(out) != n or not all(np.isfinite(out)):
        raise StationConfigError(f"{where}: expected {n} finite numbers, got {value!r}")
    return out


def _positive(value, where: str, upper: float | None = None) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise StationConfigError(f"{where}: expected a number, got {value!r}") from None
    if not (x > 0 and np.isfinite(x)) or (upper is not None and x > upper):
        bound = f" and at most {upper}" if upper is not None else ""
        raise StationConfigError(f"{where}: expected a number above 0{bound}, got {value!r}")
    return x


def _arm(d: dict, i: int, source: str) -> ArmConfig:
    where = f"{source}: arms[{i}]"
    unknown = set(d) - {
        "name", "host", "home", "workspace", "max_translation", "max_rotation", "relative_dynamics_factor",
        "collision_torque", "collision_force", "gripper",
    }  # fmt: skip
    if unknown:
        raise StationConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("host", "home", "workspace"):
        if key not in d:
            raise StationConfigError(f"{where}: '{key}' is required")
    box = Box(
        _numbers(d["workspace"].get("min"), 3, f"{where}.workspace.min"),
        _numbers(d["workspace"].get("max"), 3, f"{where}.workspace.max"),
    )
    if not np.all(np.asarray(box.min) < np.asarray(box.max)):
        raise StationConfigError(f"{where}.workspace: every min must be below its max")
    home = _numbers(d["home"].get("position"), 3, f"{where}.home.position")
    if not box.contains(np.asarray(home)):
        raise StationConfigError(f"{where}.home.position {home} lies outside the workspace box")
    gripper = GripperConfig(**(d.get("gripper") or {}))
    if not 0.0 <= gripper.open_below < gripper.close_above <= 1.0:
        raise StationConfigError(f"{where}.gripper: need 0 <= open_below < close_above <= 1")
    return ArmConfig(
        name=str(d.get("name", f"arm{i}")),
        host=str(d["host"]),
        home_position=home,
        home_euler=_numbers(d["home"].get("euler", [np.pi, 0.0, 0.0]), 3, f"{where}.home.euler"),
        workspace=box,
        max_translation=_positive(d.get("max_translation", 0.02), f"{where}.max_translation", upper=0.1),
        max_rotation=_positive(d.get("max_rotation", 0.1), f"{where}.max_rotation", upper=0.5),
        relative_dynamics_factor=_positive(
            d.get("relative_dynamics_factor", 0.1), f"{where}.relative_dynamics_factor", upper=1.0
        ),
        collision_torque=_numbers(d.get("collision_torque", [20.0] * 7), 7, f"{where}.collision_torque"),
        collision_force=_numbers(d.get("collision_force", [20.0] * 6), 6, f"{where}.collision_force"),
        gripper=gripper,
    )


def station_config_from_data(data: dict, source: str = "<memory>") -> StationConfig:
    if not isinstance(data, dict) or not data.get("arms"):
        raise StationConfigError(f"{source}: a station needs an 'arms' list")
    if len(data["arms"]) not in (1, 2):
        raise StationConfigError(f"{source}: one or two arms, got {len(data['arms'])}")
    arms = [_arm(a, i, source) for i, a in enumerate(data["arms"])]
    cameras = []
    for i, c in enumerate(data.get("cameras") or []):
        camera = CameraConfig(**{k: c[k] for k in c})
        if camera.role not in ROLES:
            raise StationConfigError(f"{source}: cameras[{i}].role must be one of {', '.join(ROLES)}")
        camera.serial = str(camera.serial)
        cameras.append(camera)
    return StationConfig(
        arms=arms,
        cameras=cameras,
        control_hz=int(_positive(data.get("control_hz", 20), f"{source}: control_hz", upper=1000)),
        watchdog_s=_positive(data.get("watchdog_s", 0.25), f"{source}: watchdog_s", upper=5.0),
        source=source,
    )


def load_station_config(path: str | Path | None = None) -> StationConfig:
    """The station file at `path`, or at the default location."""
    path = Path(path or DEFAULT_PATH).expanduser()
    if not path.is_file():
        raise StationConfigError(f"no station configuration at {path}: write one (see the README) or pass --station")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise StationConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
    try:
        return station_config_from_data(data, str(path))
    except TypeError as err:  # an unknown key in a gripper or camera section
        raise StationConfigError(f"{path}: {err}") from None
