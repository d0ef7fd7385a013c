"""Stack Coke Cans (appendix B): place the second can beside the first, then the third on top of the first.

The roles follow the cans' order along the table's y axis (they look alike, and a policy can only act on
what it sees): the middle can is the first, the lowest-y can the second, the highest-y can the third.

S1 `beside`: the second can stands on the table touching-close to the first, released, and the first is
neither knocked over nor moved more than 2 cm. S2 `on_top`: the third can rests upright on the first,
released, with both lower cans still standing.

The scripted expert can take over mid-episode (`resumable`): it skips stage 1 once that holds, and carries on with
the can it is about to place (the second, or the third after stage 1) when that can is already in its fingers,
lifting it straight up first; so `harmowam collect --takeover` records recoveries from a learned policy's states.
Holding the third can before stage 1, it lets go of it to fetch the second.
"""

from __future__ import annotations

import numpy as np

from harmowam_core.envs.sim.objects import Part, build_object
from harmowam_core.envs.sim.tasks.base import (
    ArmTarget,
    Placement,
    SimTask,
    TransitTarget,
    Waypoint,
    down,
    sample_points,
    wrap_yaw,
)

CANS = {  # radius, half height, body colour, lid colour
    "coke_can": (0.033, 0.061, (0.78, 0.05, 0.07, 1.0), (0.8, 0.8, 0.82, 1.0)),
    "redbull_can": (0.027, 0.0675, (0.15, 0.25, 0.65, 1.0), (0.85, 0.75, 0.2, 1.0)),
}


def can_object(name: str, kind: str):
    r, h, body, lid = CANS[kind]
    return build_object(
        name,
        [
            Part("cylinder", (r, h - 0.002), (0, 0, -0.002), body),
            Part("cylinder", (r * 0.9, 0.002), (0, 0, h - 0.002), lid),
        ],
        density=250.0,
    )


class StackCans(SimTask):
    name = "stack_cans"
    num_arms = 1
    base_objects = {"can": ["coke_can", "redbull_can"]}
    region_objects = ("can0", "can1", "can2")
    resumable = True

    def build(self, variant):
        self.kind = variant["can"]
        self.radius, self.half = CANS[self.kind][:2]
        return {f"can{i}": can_object(f"can{i}", self.kind) for i in range(3)}

    def place(self, rng, region):
        low, middle, high = sorted(sample_points(rng, region, 3, 0.13, margin=0.02), key=lambda p: p[1])
        # The cans look alike, so which is "first", "second" and "third" must be visible: ordered along the table's
        # y axis, the middle can is the first (it stays), the lowest-y one is placed beside it, the other on top.
        # Sampled in random roles, a policy that reads the scene can only guess which pair the stages name (1 in 6)
        pts = [middle, low, high]
        return {
            f"can{i}": Placement(p[0], p[1], self.half + 0.002, rng.uniform(-np.pi, np.pi)) for i, p in enumerate(pts)
        }

    def on_reset(self, view):
        self.start0 = view.pos("can0").copy()
        self.start1 = view.pos("can1").copy()  # the second can goes beside the first on this side

    def _resting(self, view, name, z):
        return view.up(name) > 0.97 and abs(view.pos(name)[2] - z) < 0.012 and not view.grasping(0, name)

    def predicates(self, view):
        a, b, c = (view.pos(f"can{i}") for i in range(3))
        first_ok = view.up("can0") > 0.97 and np.linalg.norm(a[:2] - self.start0[:2]) < 0.02
        beside = (
            first_ok
            and self._resting(view, "can1", self.half)
            and np.linalg.norm(a[:2] - b[:2]) < 2 * self.radius + 0.02
        )
        on_top = (
            first_ok
            and view.up("can1") > 0.97
            and self._resting(view, "can2", a[2] + 2 * self.half)
            and np.linalg.norm(a[:2] - c[:2]) < self.radius
        )
        return [beside, on_top]

    def transit_target(self, view):
        p = view.pos("can1")  # picked first, to stand beside can0
        return TransitTarget(0, "can1", p[:2].copy(), float(p[2] + self.half))

    def plan(self, view, rng):
        r, h = self.radius, self.half
        carry = 2 * h + 0.13
        a = view.pos("can0")
        direction = self.start1[:2] - self.start0[:2]  # from the reset scene: where can1 stood, however it moved
        direction /= np.linalg.norm(direction)
        # fingers close along the gripper's y; keep them off the line between the cans when placing beside
        yaw = wrap_yaw(np.arctan2(direction[1], direction[0]) + rng.uniform(-0.15, 0.15))

        def pick(name):
            p = view.pos(name)
            grip_z = p[2] + h - rng.uniform(0.022, 0.03)
            above = np.r_[p[:2], carry]
            yield Waypoint([ArmTarget(above, down(yaw), 0.0)], speed=rng.uniform(0.04, 0.05), tol=0.01)
            yield Waypoint([ArmTarget(np.r_[p[:2], grip_z], down(yaw), 0.0)], speed=0.03, tol=0.004)
            yield Waypoint([ArmTarget(np.r_[p[:2], grip_z], down(yaw), 1.0)], speed=0.01, hold=8, timeout=12)
            yield Waypoint([ArmTarget(np.r_[p[:2], carry], down(yaw), 1.0)], speed=0.04, tol=0.012)

        def put(xy, bottom_z, name):
            grip_from_top = h - (view.eef_pos(0)[2] - view.pos(name)[2])  # keep the grasp height we took
            eef_z = bottom_z + 2 * h - grip_from_top
            yield Waypoint([ArmTarget(np.r_[xy, carry], down(yaw), 1.0)], speed=rng.uniform(0.04, 0.05), tol=0.006)
            yield Waypoint([ArmTarget(np.r_[xy, eef_z + 0.03], down(yaw), 1.0)], speed=0.03, tol=0.004)
            yield Waypoint([ArmTarget(np.r_[xy, eef_z + 0.004], down(yaw), 1.0)], speed=0.012, tol=0.003, hold=3)
            yield Waypoint([ArmTarget(np.r_[xy, eef_z + 0.004], down(yaw), 0.0)], speed=0.005, hold=3, timeout=25)
            yield Waypoint([ArmTarget(np.r_[xy, carry], down(yaw), 0.0)], speed=0.04, tol=0.015)

        def lift():  # taken over with the can in the fingers: straight up before carrying it anywhere
            yield Waypoint([ArmTarget(np.r_[view.eef_pos(0)[:2], carry], down(yaw), 1.0)], speed=0.04, tol=0.012)

        # a takeover (`resumable`) skips stage 1 once it holds and the grasp of a can already in the fingers; from
        # the reset scene (nothing held, no stage reached) this is the whole plan, with the same random draws
        if not self.predicates(view)[0]:
            yield from lift() if view.grasping(0, "can1") else pick("can1")
            yield from put(a[:2] + direction * (2 * r + 0.012), 0.0, "can1")
        yield from lift() if view.grasping(0, "can2") else pick("can2")
        a = view.pos("can0")
        yield from put(a[:2], a[2] + h + 0.002, "can2")
