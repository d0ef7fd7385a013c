"""Pour Coke into Beaker (appendix B): grasp the bottle, then pour its contents into the beaker.

The liquid is eight small spheres inside an open bottle. S1 `grasp`: the bottle is held and lifted 5 cm off
the table. S2 `pour`: at least half the spheres lie inside the beaker and at most two spilled elsewhere.
"""

from __future__ import annotations

import numpy as np
from robosuite.models.objects import BallObject

from harmowam_core.envs.sim.objects import Part, build_object, cup_parts
from harmowam_core.envs.sim.tasks.base import (
    ArmTarget,
    Placement,
    SimTask,
    TransitTarget,
    Waypoint,
    down,
    sample_points,
)
from harmowam_core.geometry import GRIPPER_HOME, euler_to_mat

NUM_DROPS = 8
HANDLE_OUT = 0.07  # handle centre beyond the bottle's outer wall (m)
HANDLE_DROP = 0.03  # handle centre below the bottle's top
HANDLE_HALF_HEIGHT = 0.02
DROP_R = 0.0075
# name -> inner half width, height, wall, rgba, sides
CONTAINERS = {
    "coke_bottle": (0.018, 0.13, 0.005, (0.35, 0.12, 0.08, 1.0), 4),
    "sprite_bottle": (0.015, 0.15, 0.005, (0.2, 0.7, 0.3, 1.0), 4),
    "beaker": (0.042, 0.075, 0.004, (0.75, 0.85, 0.95, 1.0), 4),
    "measuring_cup": (0.05, 0.06, 0.004, (0.95, 0.95, 0.9, 1.0), 8),
}


class PourCoke(SimTask):
    name = "pour_coke"
    num_arms = 1
    base_objects = {"bottle": ["coke_bottle", "sprite_bottle"], "beaker": ["beaker", "measuring_cup"]}
    region_objects = ("bottle",)

    def build(self, variant):
        self.bottle_kind, self.beaker_kind = variant["bottle"], variant["beaker"]
        objs = {}
        for role, kind, density in (("bottle", self.bottle_kind, 400.0), ("beaker", self.beaker_kind, 5000.0)):
            inner, height, wall, rgba, sides = CONTAINERS[kind]
            parts = cup_parts(inner, height, wall, rgba, round_sides=sides)
            if role == "bottle":  # a jug handle toward the robot, so the hand never covers the mouth
                x0, z = -(inner + wall), height / 2 - HANDLE_DROP
                reach = (HANDLE_OUT - wall) / 2
                parts.append(Part("box", (reach, 0.006, 0.006), (x0 - reach, 0.0, z), rgba, name="neck"))
                handle = (0.016, 0.012, HANDLE_HALF_HEIGHT)
                parts.append(Part("box", handle, (x0 - HANDLE_OUT + wall, 0.0, z), rgba, name="handle"))
            objs[role] = build_object(role, parts, density=density)
        for i in range(NUM_DROPS):
            objs[f"drop{i}"] = BallObject(
                name=f"drop{i}",
                size=[DROP_R],
                rgba=[0.25, 0.08, 0.03, 1.0],
                density=800.0,
                friction=[0.3, 0.005, 0.0001],
            )
        return objs

    def place(self, rng, region):
        bottle = sample_points(rng, region, 1, 0.0, margin=0.01)[0]
        beaker = bottle + np.array([rng.uniform(-0.03, 0.03), rng.uniform(0.17, 0.21)])
        _, height, wall, _, _ = CONTAINERS[self.bottle_kind]
        out = {
            "bottle": Placement(bottle[0], bottle[1], height / 2 + 0.001),
            "beaker": Placement(beaker[0], beaker[1], CONTAINERS[self.beaker_kind][1] / 2 + 0.001),
        }
        inner = CONTAINERS[self.bottle_kind][0]
        for i in range(NUM_DROPS):  # two columns of four, resting on the bottle's floor
            dx = (i % 2 - 0.5) * (inner - DROP_R) * 0.9
            z = wall + DROP_R + 0.001 + (i // 2) * (2 * DROP_R + 0.001)
            out[f"drop{i}"] = Placement(bottle[0] + dx, bottle[1] + rng.uniform(-0.004, 0.004), z)
        return out

    def footprint(self, placements):
        bottle, beaker = (np.array([placements[k].x, placements[k].y]) for k in ("bottle", "beaker"))
        handle = bottle - [CONTAINERS[self.bottle_kind][0] + HANDLE_OUT, 0.0]
        # and the lane the tilted hand and wrist sweep, beyond the beaker on the pouring side
        return [bottle, handle, beaker, *(beaker + [dx, dy] for dx in (-0.1, -0.04, 0.03) for dy in (0.06, 0.13))]

    def _inside(self, view, drop, container):
        inner, height, _, _, _ = CONTAINERS[self.beaker_kind if container == "beaker" else self.bottle_kind]
        rel = view.mat(container).T @ (view.pos(drop) - view.pos(container))
        return bool(np.all(np.abs(rel[:2]) < inner + 0.002) and abs(rel[2]) < height / 2 + 0.005)

    def predicates(self, view):
        bottle = view.pos("bottle")
        lifted = view.grasping(0, "bottle") and bottle[2] - CONTAINERS[self.bottle_kind][1] / 2 > 0.05
        drops = [f"drop{i}" for i in range(NUM_DROPS)]
        in_beaker = sum(self._inside(view, d, "beaker") for d in drops)
        spilled = sum(not self._inside(view, d, "beaker") and not self._inside(view, d, "bottle") for d in drops)
        return [lifted, in_beaker >= NUM_DROPS / 2 and spilled <= 2]

    def _handle(self, view) -> np.ndarray:
        """The centre of the bottle's handle (where the hand grasps it), table frame."""
        b_inner, b_height = CONTAINERS[self.bottle_kind][:2]
        local = np.array([-(b_inner + HANDLE_OUT), 0.0, b_height / 2 - HANDLE_DROP])
        return view.pos("bottle") + view.mat("bottle") @ local

    def transit_target(self, view):
        handle = self._handle(view)
        return TransitTarget(0, "bottle", handle[:2], float(handle[2] + HANDLE_HALF_HEIGHT))

    def plan(self, view, rng):
        b_inner, b_height, b_wall, _, _ = CONTAINERS[self.bottle_kind]
        k_height = CONTAINERS[self.beaker_kind][1]
        handle = self._handle(view)
        grip_z = handle[2] + rng.uniform(-0.004, 0.004)
        carry = k_height + b_height + 0.06
        yield Waypoint([ArmTarget(np.r_[handle[:2], carry], down(), 0.0)], speed=rng.uniform(0.04, 0.05), tol=0.008)
        yield Waypoint([ArmTarget(np.r_[handle[:2], grip_z], down(), 0.0)], speed=0.02, tol=0.003, hold=3)
        yield Waypoint([ArmTarget(np.r_[handle[:2], grip_z], down(), 1.0)], speed=0.01, hold=8, timeout=12)
        yield Waypoint([ArmTarget(np.r_[handle[:2], carry], down(), 1.0)], speed=0.025, tol=0.015)
        # tilt about the world x axis (the bottle sits beside the hand, so the mouth swings toward +y clear of
        # the wrist), keeping the mouth over a point just off the beaker's centre; the hand target for each
        # tilt follows from the mouth's offset in the gripper frame, which a firm grasp keeps fixed
        mouth_local = view.eef_mat(0).T @ (view.world_point("bottle", (0.0, 0.0, b_height / 2)) - view.eef_pos(0))
        beaker = view.pos("beaker")
        back = 0.012 + 0.4 * (b_height - 0.13)  # spheres leave a longer bottle faster: aim a little short
        spout = np.r_[beaker[:2] + [rng.uniform(-0.006, 0.006), -back], k_height + 0.045]

        def hand_for(roll, lift=0.0):
            goal = euler_to_mat(np.array([roll, 0.0, 0.0])) @ GRIPPER_HOME
            return np.r_[spout[:2], spout[2] + lift] - goal @ mouth_local

        yield Waypoint([ArmTarget(hand_for(0.0, 0.12), down(), 1.0)], speed=0.03, tol=0.01)
        for roll, lift in ((-0.6, 0.1), (-1.2, 0.06), (-1.6, 0.03)):
            yield Waypoint([ArmTarget(hand_for(roll, lift), np.array([roll, 0.0, 0.0]), 1.0)], speed=0.012, tol=0.01)
        tilt = -rng.uniform(2.0, 2.15)
        yield Waypoint([ArmTarget(hand_for(tilt), np.array([tilt, 0.0, 0.0]), 1.0)], speed=0.01, hold=25, timeout=80)
        yield Waypoint([ArmTarget(hand_for(-0.8, 0.08), np.array([-0.8, 0.0, 0.0]), 1.0)], speed=0.015, tol=0.02)
