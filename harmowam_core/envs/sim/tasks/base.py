"""What a simulated task provides, and the waypoint machinery its scripted expert is written in.

A task builds its objects (honouring object substitutes), places them (positions sampled from a recipe
region), judges its stages from privileged simulator state, and scripts an expert as a generator of
`Waypoint`s read off the live scene, so a plan adapts to where things actually are.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from harmowam_core.config import Recipe, Region
from harmowam_core.envs.sim.scene import SceneView
from harmowam_core.errors import HarmoWAMError
from harmowam_core.geometry import euler_to_mat, mat_to_euler, mat_to_rotvec, rotvec_to_mat


@dataclass
class Placement:
    """Where an object starts: table-frame xy, yaw about z, and z of its centre above the table top."""

    x: float
    y: float
    z: float
    yaw: float = 0.0


@dataclass
class ArmTarget:
    pos: np.ndarray  # (3,) table frame
    euler: np.ndarray = field(default_factory=lambda: np.zeros(3))  # rotation away from home, extrinsic xyz
    gripper: float = 0.0  # 0 open, 1 closed


@dataclass
class TransitTarget:
    """Where an episode's first transit ends (paper appendix D.2): arm `arm` goes for object `name`, whose
    graspable part is centred over the table-frame point `xy` (metres) with its top at height `top`."""

    arm: int
    name: str
    xy: np.ndarray  # (2,)
    top: float


@dataclass
class Waypoint:
    """Targets for every arm (one per arm, in action order); reached when all arms are within `tol`
    metres (and 0.05 rad), then held for `hold` further steps. `speed` caps the commanded metres per step
    (the arm covers roughly a third of it)."""

    arms: list[ArmTarget]
    speed: float = 0.04
    tol: float = 0.006
    hold: int = 0
    timeout: int = 120


class SimTask:
    """Base class of the six simulated tasks."""

    name = ""
    num_arms = 1
    base_objects: dict[str, list[str]] = {}  # object role -> names it may be built as (first = in-domain)
    region_objects: tuple[str, ...] = ()  # objects whose positions come from the recipe's region
    hold_steps = 5  # a stage predicate must hold this many consecutive steps to count
    # whether `plan` starts from any state a learned policy leaves the scene in (a can already in the fingers, a
    # stage already reached), not only from the reset scene: what a takeover needs (`collect.Takeover`)
    resumable = False

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    # --- model
    def variant(self, substitutes: dict[str, str] | None) -> dict[str, str]:
        """Object role -> model to build; substitutes come from the recipe's `ood.objects`."""
        chosen = {role: names[0] for role, names in self.base_objects.items()}
        for role, sub in (substitutes or {}).items():
            key = next((r for r, names in self.base_objects.items() if names[0] == role or r == role), None)
            if key is None:
                raise HarmoWAMError(
                    f"{self.recipe.source}: ood.objects.substitutes: '{role}' is not an object of {self.name} "
                    f"(objects: {', '.join(names[0] for names in self.base_objects.values())})"
                )
            if sub not in self.base_objects[key][1:]:
                raise HarmoWAMError(
                    f"{self.recipe.source}: ood.objects.substitutes.{role}: no simulated object '{sub}' "
                    f"(available: {', '.join(self.base_objects[key][1:])})"
                )
            chosen[key] = sub
        return chosen

    def build(self, variant: dict[str, str]) -> dict:
        raise NotImplementedError

    def place(self, rng: np.random.Generator, region: Region) -> dict[str, Placement]:
        raise NotImplementedError

    def predicates(self, view: SceneView) -> list[bool]:
        raise NotImplementedError

    def plan(self, view: SceneView, rng: np.random.Generator) -> Iterator[Waypoint]:
        """The scripted expert's waypoints from the scene as it is when the first one is asked for (a
        generator: each waypoint is computed when the previous one is reached)."""
        raise NotImplementedError

    # --- optional hooks
    def transit_target(self, view: SceneView) -> TransitTarget | None:
        """The object the scripted expert goes for first, where it is now (the transit/interaction split of
        `harmowam_core.phase_split`); None: the task does not define one, and the split is not measured."""
        return None

    def footprint(self, placements: dict[str, Placement]) -> list[np.ndarray]:
        """Table-frame xy points the scene's objects cover; background distractors keep clear of them."""
        return [np.array([p.x, p.y]) for p in placements.values()]

    def on_reset(self, view: SceneView) -> None:
        pass

    def on_step(self, view: SceneView) -> None:
        pass


def both(left: ArmTarget, right: ArmTarget, **kw) -> Waypoint:
    """A dual-arm waypoint: the left arm's target, then the right's."""
    return Waypoint([left, right], **kw)


def parked(view: SceneView) -> list[ArmTarget]:
    """Each arm held where it is now, gripper down and open: the targets of an arm waiting its turn."""
    return [ArmTarget(view.eef_pos(arm).copy(), down()) for arm in range(len(view.robots))]


def sample_points(
    rng: np.random.Generator,
    region: Region,
    n: int,
    min_dist: float,
    avoid: list[np.ndarray] = (),
    margin: float = 0.0,
    tries: int = 2000,
) -> list[np.ndarray]:
    """n xy points in `region` (shrunk by `margin`), pairwise at least `min_dist` apart and from `avoid`."""
    lo = np.array([region.x[0] + margin, region.y[0] + margin])
    hi = np.array([region.x[1] - margin, region.y[1] - margin])
    hi = np.maximum(hi, lo)
    for _ in range(tries):
        pts: list[np.ndarray] = []
        for _ in range(n * 50):
            p = rng.uniform(lo, hi)
            if all(np.linalg.norm(p - q) >= min_dist for q in [*pts, *avoid]):
                pts.append(p)
                if len(pts) == n:
                    return pts
    raise RuntimeError(f"cannot place {n} objects {min_dist} m apart in region x={region.x} y={region.y}")


def down(yaw: float = 0.0) -> np.ndarray:
    """Gripper pointing down, turned by `yaw` about the vertical."""
    return np.array([0.0, 0.0, yaw])


def wrap_yaw(yaw: float, period: float = np.pi) -> float:
    """The equivalent gripper yaw closest to zero for a grasp symmetric under rotation by `period`."""
    return float((yaw + period / 2) % period - period / 2)


POS_GAIN = 3.0  # OSC tracks only part of a commanded delta per step; command a multiple of the error
VEL_GAIN = 2.0  # and damp with the measured velocity so the arm does not overshoot a target
ROT_GAIN = 2.0
MAX_TURN = 0.25  # rad per step
TURN_PER_METRE = 6.0  # a waypoint's speed caps turning too: 0.01 m/step -> 0.06 rad/step


DETOUR_RADIUS = (0.015, 0.04)  # m: how far beside the next waypoint's target a detour goes
DETOUR_RISE = (0.01, 0.04)  # m: and how far above the arm's current height (so it clears what is below)
DETOUR_MOVES = 0.05  # m: only before a waypoint at least this far away (see WaypointFollower)
DETOUR_RISES = 0.01  # m: that rises no more than this
DETOUR_SPEED = 0.02  # m per step: and is at least this fast (a slow, careful move is never preceded by one)


class WaypointFollower:
    """Turns a task's waypoint plan into actions: a proportional step toward each target, capped per step,
    with small noise so demonstrations differ.

    `detour` in [0, 1]: the probability that the expert first goes astray before a waypoint of its plan, and then
    carries on: the steps after a detour show the expert recovering from a state off its own path, the states a
    learned policy drifts into (DART, Laskey et al. 2017, injects noise while demonstrating for the same reason).
    Only a fast move (DETOUR_SPEED) to a waypoint at least DETOUR_MOVES away that rises at most DETOUR_RISES can
    be preceded by one: an approach, a descent, a carry; not a grasp, a release, a lift or a slow constrained
    move (a zipper pull), where a sideways move would push or drag the object in the fingers or beside them.
    The detour goes to a point DETOUR_RADIUS beside the waypoint's target, DETOUR_RISE above the arm's current
    height, the grippers as they are; on two arms, an arm whose own move is not eligible holds its previous
    target meanwhile. The actions of a detour are not the expert's and
    `detouring` says so for the last action returned, so a trainer can leave them out
    (`training.experts.ExpertWindows`). Detours draw from their own random stream, so `detour=0` gives the same
    demonstration as before for every seed."""

    def __init__(
        self, view: SceneView, plan: Iterator[Waypoint], home: list[np.ndarray], rng, noise=0.0015, detour=0.0
    ):
        if not 0.0 <= detour <= 1.0:
            raise ValueError(f"detour must be a probability in [0, 1], got {detour}")
        self.view, self.plan, self.home, self.rng, self.noise = view, plan, home, rng, noise
        self.detour = float(detour)
        self._detour_rng = rng.spawn(1)[0] if self.detour > 0 else None
        self._after_detour: Waypoint | None = None  # the plan's waypoint a detour goes astray before
        self.detouring = False  # whether the last action returned belongs to a detour
        self.current: Waypoint | None = None
        self.held = 0
        self.elapsed = 0
        self.done = False
        self._prev: list[np.ndarray | None] = [None] * len(home)
        self._last: Waypoint | None = None  # the most recent waypoint, held once the plan is done

    def _arm_action(self, arm: int, target: ArmTarget, speed: float) -> np.ndarray:
        pos = self.view.eef_pos(arm)
        velocity = pos - self._prev[arm] if self._prev[arm] is not None else np.zeros(3)  # m per step
        self._prev[arm] = pos.copy()
        delta = (target.pos - pos) * POS_GAIN - velocity * VEL_GAIN
        dist = np.linalg.norm(delta)
        if dist > speed:
            delta = delta / dist * speed
        delta = delta + self.rng.normal(0.0, self.noise, 3) * min(1.0, dist / 0.02)
        goal = euler_to_mat(target.euler) @ self.home[arm]
        rot = goal @ self.view.eef_mat(arm).T
        rv = mat_to_rotvec(rot)
        angle = np.linalg.norm(rv)
        rv = rv * ROT_GAIN
        max_turn = min(MAX_TURN, speed * TURN_PER_METRE)
        if angle * ROT_GAIN > max_turn:
            rv = rv / angle * max_turn

        return np.concatenate([delta, mat_to_euler(rotvec_to_mat(rv)), [target.gripper]])

    def _reached(self, wp: Waypoint) -> bool:
        for arm, target in enumerate(wp.arms):
            if np.linalg.norm(target.pos - self.view.eef_pos(arm)) > wp.tol:
                return False
            goal = euler_to_mat(target.euler) @ self.home[arm]
            if np.linalg.norm(mat_to_rotvec(goal @ self.view.eef_mat(arm).T)) > 0.05:
                return False
            if target.gripper < 0.5 and self.view.gripper_closed(arm) > 0.06:  # wait for the fingers to open
                return False
        return True

    def act(self) -> np.ndarray:
        if self.current is None and not self.done:
            self._advance()
        self.detouring = self._after_detour is not None
        if self.current is None:  # plan finished: hold still with the last gripper command
            return self._still()
        wp = self.current
        action = np.concatenate([self._arm_action(a, t, wp.speed) for a, t in enumerate(wp.arms)])
        self.elapsed += 1
        if self._reached(wp) or self.elapsed >= wp.timeout:
            self.held += 1
            if self.held > wp.hold:
                self.current = None
        return action.astype(np.float32)

    def _advance(self):
        self.held, self.elapsed = 0, 0
        if self._after_detour is not None:  # back on the plan after a detour
            self.current, self._after_detour = self._after_detour, None
            self._last = self.current
            return
        try:
            self.current = next(self.plan)
        except StopIteration:
            self.current, self.done = None, True
            return
        detour = self._detour_before(self.current) if self._detour_rng is not None else None
        if detour is not None:
            self._after_detour, self.current = self.current, detour
            return
        self._last = self.current

    def _detour_before(self, wp: Waypoint) -> Waypoint | None:
        """With probability `detour`, a waypoint beside `wp`'s targets and above the arms' current heights (see
        the class docstring), every gripper left as the previous waypoint had it; None for no detour."""
        here = [self.view.eef_pos(arm) for arm in range(len(wp.arms))]
        eligible = [
            wp.speed >= DETOUR_SPEED and np.linalg.norm(t.pos - p) >= DETOUR_MOVES and t.pos[2] <= p[2] + DETOUR_RISES
            for t, p in zip(wp.arms, here, strict=True)
        ]
        rng = self._detour_rng
        if not any(eligible) or rng.uniform() >= self.detour:
            return None
        arms = []
        for arm, (target, p) in enumerate(zip(wp.arms, here, strict=True)):
            before = self._last.arms[arm] if self._last is not None else ArmTarget(p.copy())
            if not eligible[arm]:  # this arm waits where its previous waypoint left it
                arms.append(before)
                continue
            angle, radius, rise = rng.uniform(0, 2 * np.pi), rng.uniform(*DETOUR_RADIUS), rng.uniform(*DETOUR_RISE)
            pos = np.r_[target.pos[:2] + radius * np.array([np.cos(angle), np.sin(angle)]), p[2] + rise]
            arms.append(ArmTarget(pos, target.euler, before.gripper))
        return Waypoint(arms, speed=wp.speed, tol=0.01, timeout=60)  # eligible: wp.speed >= DETOUR_SPEED

    def _still(self) -> np.ndarray:
        last = self._last
        grips = [t.gripper for t in last.arms] if last is not None else [0.0] * len(self.home)
        return np.concatenate([np.r_[np.zeros(6), g] for g in grips]).astype(np.float32)
