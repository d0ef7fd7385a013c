"""Pick Fruit to Plate (appendix B): the banana, then the carrot, onto the plate.

Stand-ins: the banana a yellow capsule, the carrot an orange capsule with a green top, the plate a flat
disc. S1 / S2: the fruit rests on the plate (within its rim, touching it, released).
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

LYING = (0.7071, 0.0, 0.7071, 0.0)  # a capsule's axis turned from z onto x

# name -> (parts, half height when lying, symmetric under a half turn about z (grasp across the long axis))
FRUITS = {
    "banana": ([Part("capsule", (0.018, 0.06), rgba=(0.95, 0.85, 0.2, 1), quat=LYING)], 0.018, True),
    "plantain": (
        [
            Part("capsule", (0.022, 0.055), rgba=(0.45, 0.55, 0.15, 1), quat=LYING),
            Part("box", (0.012, 0.012, 0.012), (0.085, 0.0, 0.0), (0.25, 0.18, 0.08, 1)),
        ],
        0.022,
        True,
    ),
    "carrot": (
        [
            Part("capsule", (0.016, 0.05), rgba=(0.95, 0.45, 0.05, 1), quat=LYING),
            Part("box", (0.012, 0.01, 0.008), (0.072, 0.0, 0.0), (0.2, 0.6, 0.15, 1)),
        ],
        0.016,
        True,
    ),
    "pepper": (  # a bell pepper: squat and round, low enough for the palm to clear its stalk
        [
            Part("cylinder", (0.028, 0.018), rgba=(0.85, 0.08, 0.05, 1)),
            Part("sphere", (0.026,), (0.0, 0.0, 0.0), (0.85, 0.08, 0.05, 1)),
            Part("cylinder", (0.005, 0.004), (0.0, 0.0, 0.028), (0.15, 0.5, 0.1, 1)),
        ],
        0.026,
        False,
    ),
}
PLATE_R, PLATE_H = 0.09, 0.007


class PickFruit(SimTask):
    name = "pick_fruit"
    num_arms = 1
    base_objects = {"banana": ["banana", "plantain"], "carrot": ["carrot", "pepper"]}
    region_objects = ("plate", "banana", "carrot")

    def build(self, variant):
        self.kinds = {"banana": variant["banana"], "carrot": variant["carrot"]}
        objs = {  # rolling friction (condim 6): a round fruit set down must not roll off the plate
            role: build_object(role, FRUITS[kind][0], density=400.0, condim=6, friction=(1.5, 0.01, 0.002))
            for role, kind in self.kinds.items()
        }
        objs["plate"] = build_object(
            "plate",
            [
                Part("cylinder", (PLATE_R, PLATE_H), rgba=(0.93, 0.93, 0.9, 1)),
                Part("cylinder", (PLATE_R * 0.55, 0.0005), (0, 0, PLATE_H), (0.75, 0.8, 0.85, 1)),
            ],
            density=1500.0,
        )
        return objs

    def place(self, rng, region):
        while True:  # fruit clear of each other (as segments, given their yaws) and of the plate's rim
            plate = sample_points(rng, region, 1, 0.0)[0]
            fruits = sample_points(rng, region, 2, 0.09, avoid=[plate], tries=4000)
            yaws = rng.uniform(-np.pi, np.pi, 2)
            ends = [self._ends(role, p, yaw) for role, p, yaw in zip(("banana", "carrot"), fruits, yaws, strict=True)]
            if _segment_gap(*ends[0], *ends[1]) > 0.05 and all(
                _segment_gap(*e, plate, plate) > PLATE_R + 0.04 for e in ends
            ):
                break
        out = {"plate": Placement(plate[0], plate[1], PLATE_H + 0.001)}
        for role, p, yaw in zip(("banana", "carrot"), fruits, yaws, strict=True):
            out[role] = Placement(p[0], p[1], FRUITS[self.kinds[role]][1] + 0.002, yaw)
        return out

    def footprint(self, placements):
        points = [np.array([placements["plate"].x, placements["plate"].y])]
        for role in ("banana", "carrot"):
            p = placements[role]
            a, b = self._ends(role, np.array([p.x, p.y]), p.yaw)
            points += [a, (a + b) / 2, b]
        return points

    def _ends(self, role, p, yaw):
        """The fruit's extent on the table as a segment (xy end points, the long axis along its local x)."""
        parts = FRUITS[self.kinds[role]][0]
        half = max(abs(q.pos[0]) + (q.size[0] + q.size[1] if q.type == "capsule" else q.size[0]) for q in parts)
        axis = np.array([np.cos(yaw), np.sin(yaw)]) * half
        return p - axis, p + axis

    def _on_plate(self, view, role):
        fruit, plate = view.pos(role), view.pos("plate")
        return (
            np.linalg.norm(fruit[:2] - plate[:2]) < PLATE_R - 0.015
            and fruit[2] < plate[2] + PLATE_H + FRUITS[self.kinds[role]][1] + 0.02
            and view.touching(role, "plate")
            and not view.grasping(0, role)
        )

    def predicates(self, view):
        return [self._on_plate(view, "banana"), self._on_plate(view, "carrot")]

    def transit_target(self, view):
        p = view.pos("banana")  # picked first
        return TransitTarget(0, "banana", p[:2].copy(), float(p[2] + FRUITS[self.kinds["banana"]][1]))

    def plan(self, view, rng):
        carry = 0.2
        offsets = rng.permutation([-0.045, 0.045])
        place_yaw = wrap_yaw(np.pi / 2 + rng.uniform(-0.1, 0.1))  # fruit laid along y, side by side in x

        for role, offset in zip(("banana", "carrot"), offsets, strict=True):
            kind = self.kinds[role]
            half = FRUITS[kind][1]
            p = view.pos(role)
            m = view.mat(role)
            yaw = wrap_yaw(np.arctan2(m[1, 0], m[0, 0])) if FRUITS[kind][2] else rng.uniform(-0.5, 0.5)
            grip_z = max(half - 0.004, 0.017) + rng.uniform(-0.002, 0.002)
            yield Waypoint([ArmTarget(np.r_[p[:2], carry], down(yaw), 0.0)], speed=rng.uniform(0.04, 0.05), tol=0.01)
            yield Waypoint([ArmTarget(np.r_[p[:2], grip_z + 0.04], down(yaw), 0.0)], speed=0.03, tol=0.005)
            yield Waypoint([ArmTarget(np.r_[p[:2], grip_z], down(yaw), 0.0)], speed=0.015, tol=0.004)
            yield Waypoint([ArmTarget(np.r_[p[:2], grip_z], down(yaw), 1.0)], speed=0.01, hold=8, timeout=12)
            yield Waypoint([ArmTarget(np.r_[p[:2], carry], down(yaw), 1.0)], speed=0.04, tol=0.015)
            plate = view.pos("plate")
            spot = plate[:2] + np.array([offset, 0.0]) + rng.uniform(-0.008, 0.008, 2)
            if FRUITS[kind][2]:
                yaw = place_yaw
            drop_z = PLATE_H * 2 + grip_z + 0.012
            yield Waypoint([ArmTarget(np.r_[spot, carry], down(yaw), 1.0)], speed=rng.uniform(0.04, 0.05), tol=0.01)
            yield Waypoint([ArmTarget(np.r_[spot, drop_z], down(yaw), 1.0)], speed=0.025, tol=0.005, hold=2)
            yield Waypoint([ArmTarget(np.r_[spot, drop_z], down(yaw), 0.0)], speed=0.01, hold=3, timeout=25)
            yield Waypoint([ArmTarget(np.r_[spot, carry], down(yaw), 0.0)], speed=0.04, tol=0.02)


def _segment_gap(a0, a1, b0, b1, samples: int = 21) -> float:
    """Smallest distance between two xy segments (sampled; a point is a segment of length zero)."""
    t = np.linspace(0.0, 1.0, samples)[:, None]
    pa, pb = a0 + t * (a1 - a0), b0 + t * (b1 - b0)
    return float(np.min(np.linalg.norm(pa[:, None] - pb[None], axis=-1)))
