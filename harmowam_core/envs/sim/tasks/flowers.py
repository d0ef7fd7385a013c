"""Put Flowers in Vase (appendix B, dual arm): the left arm picks a flower, hands it to the right arm, and the
right arm turns it upright and inserts the stem into a vase.

The flower is rigid: a square stem (so a two-finger grasp holds it against twisting) with a flat blossom at
one end, lying across a low stand on the left of the table. The vase stands on the right. S1 `pick`: the
left gripper holds the flower lifted off its stand. S2 `handover`: the right gripper holds it in the air and
the left has let go. S3 `insert`: the stem's end is inside the vase below the rim, the flower roughly
upright, and the right gripper has let go.
"""

from __future__ import annotations

import numpy as np

from harmowam_core.envs.sim.objects import Part, build_object, cup_parts
from harmowam_core.envs.sim.tasks.base import (
    ArmTarget,
    Placement,
    SimTask,
    TransitTarget,
    both,
    down,
    parked,
    sample_points,
    wrap_yaw,
)
from harmowam_core.geometry import euler_to_mat, mat_to_euler, rotvec_to_mat

STEM_HALF = 0.16  # stem half length along the flower's local x; the blossom end is +x
STEM_W = 0.005  # stem half width
STAND_H = 0.03  # the stand's blocks hold the stem this high
STAND_AT = (-0.11, 0.12)  # block positions along the flower
VASE_INNER, VASE_H, VASE_WALL = 0.024, 0.09, 0.006
LEFT_GRIP, RIGHT_GRIP = 0.08, -0.06  # where each hand holds the stem (flower frame, along x)
HANDOVER_Y = 0.07  # the left hand's side of the handover point
LIFT = 0.04  # the pick counts once the flower is this far above its stand


def _blossom(x: float, y: float, rgba: tuple, name: str) -> list[Part]:
    """A flat blossom facing up while the flower lies (facing forward once it stands in the vase)."""
    return [
        Part("cylinder", (0.025, 0.004), (x, y, 0.0), rgba, name=f"{name}_petals"),
        Part("cylinder", (0.008, 0.003), (x, y, 0.006), (0.95, 0.8, 0.1, 1.0), name=f"{name}_heart"),
    ]


FLOWERS = {
    "flower": [(STEM_HALF + 0.018, 0.0, (0.9, 0.15, 0.35, 1.0))],
    "flower_two_blossoms": [
        (STEM_HALF + 0.018, 0.0, (0.55, 0.2, 0.85, 1.0)),
        (STEM_HALF - 0.035, 0.04, (0.95, 0.55, 0.1, 1.0)),
    ],
}


class Flowers(SimTask):
    name = "flowers"
    num_arms = 2
    base_objects = {"flower": ["flower", "flower_two_blossoms"]}
    region_objects = ("flower",)

    def build(self, variant):
        self.kind = variant["flower"]
        parts = [Part("box", (STEM_HALF, STEM_W, STEM_W), rgba=(0.2, 0.55, 0.15, 1.0), name="stem")]
        parts.append(Part("box", (0.012, 0.018, 0.002), (-0.02, 0.014, 0.0), (0.25, 0.6, 0.2, 1.0), name="leaf"))
        for i, (x, y, rgba) in enumerate(FLOWERS[self.kind]):
            parts += _blossom(x, y, rgba, f"blossom{i}")
        wood = (0.55, 0.4, 0.25, 1.0)
        stand = [
            Part("box", (0.012, 0.03, STAND_H / 2), (x, 0.0, 0.0), wood, name=f"block{i}")
            for i, x in enumerate(STAND_AT)
        ]
        vase = cup_parts(VASE_INNER, VASE_H, VASE_WALL, (0.2, 0.35, 0.7, 1.0), round_sides=8)
        return {
            "flower": build_object("flower", parts, density=300.0, condim=4),
            "stand": build_object("stand", stand, free=False),
            "vase": build_object("vase", vase, free=False),
        }

    def place(self, rng, region):
        p = sample_points(rng, region, 1, 0.0)[0]
        yaw = rng.uniform(-0.3, 0.3)
        # the vase mirrors the flower's region on the right half of the table
        mirrored = type(region)(x=region.x, y=[-region.y[1], -region.y[0]])
        v = sample_points(rng, mirrored, 1, 0.0)[0]
        return {
            "stand": Placement(p[0], p[1], STAND_H / 2, yaw),
            "flower": Placement(p[0], p[1], STAND_H + STEM_W + 0.001, yaw),
            "vase": Placement(v[0], v[1], VASE_H / 2, rng.uniform(-np.pi, np.pi)),
        }

    def footprint(self, placements):
        f, v = placements["flower"], placements["vase"]
        along = np.array([np.cos(f.yaw), np.sin(f.yaw)])
        return [np.array([f.x, f.y]) + t * along for t in np.linspace(-STEM_HALF, STEM_HALF + 0.04, 6)] + [
            np.array([v.x, v.y])
        ]

    def on_reset(self, view):
        self.rest_z = view.pos("flower")[2]

    def _stem_end(self, view) -> np.ndarray:
        return view.world_point("flower", (-STEM_HALF, 0.0, 0.0))

    def predicates(self, view):
        z = view.pos("flower")[2]
        left, right = view.grasping(0, "flower"), view.grasping(1, "flower")
        picked = left and z > self.rest_z + LIFT
        handed = right and not left and z > self.rest_z + LIFT
        end, vase = self._stem_end(view), view.pos("vase")
        inserted = (
            np.linalg.norm(end[:2] - vase[:2]) < VASE_INNER + 0.004
            and end[2] < vase[2] + VASE_H / 2 - 0.03
            and view.mat("flower")[2, 0] > 0.7  # the stem points up, blossom on top
            and not right
            and not left
        )
        return [picked, handed, inserted]

    def transit_target(self, view):
        grip = view.world_point("flower", (LEFT_GRIP, 0.0, 0.0))  # the left arm picks it across the stem
        return TransitTarget(0, "flower", grip[:2], float(grip[2] + STEM_W))

    def plan(self, view, rng):
        park = parked(view)

        # 1. the left arm picks the flower off its stand, across the stem
        m = view.mat("flower")
        yaw = wrap_yaw(np.arctan2(m[1, 0], m[0, 0]))
        grip = view.world_point("flower", (LEFT_GRIP + rng.uniform(-0.01, 0.01), 0.0, 0.0))
        grip_z = grip[2] + rng.uniform(-0.002, 0.002)
        above = np.r_[grip[:2], 0.15]
        yield both(ArmTarget(above, down(yaw)), park[1], speed=rng.uniform(0.04, 0.05), tol=0.01)
        yield both(ArmTarget(np.r_[grip[:2], grip_z], down(yaw)), park[1], speed=0.02, tol=0.004)
        yield both(ArmTarget(np.r_[grip[:2], grip_z], down(yaw), 1.0), park[1], speed=0.01, hold=8, timeout=12)
        yield both(ArmTarget(above, down(yaw), 1.0), park[1], speed=0.03, tol=0.015)

        # 2. the left carries it to the handover point with the stem across the table (along y, blossom on
        #    its side) and holds it there; the right waits to its side, then grasps near the stem's end
        hand = np.array([rng.uniform(-0.04, 0.0), rng.uniform(-0.02, 0.02), rng.uniform(0.24, 0.28)])
        yield both(
            ArmTarget(hand + [0.0, HANDOVER_Y, 0.0], down(np.pi / 2), 1.0),
            ArmTarget(hand + [-0.05, -0.2, 0.1], down()),
            speed=rng.uniform(0.03, 0.04),
            tol=0.008,
            hold=3,
        )
        hold_left = ArmTarget(view.eef_pos(0).copy(), down(np.pi / 2), 1.0)
        d = view.mat("flower")[:, 0].copy()
        d[2] = 0.0
        d /= np.linalg.norm(d)  # the stem's direction, toward the blossom
        r_yaw = wrap_yaw(np.arctan2(d[1], d[0]))
        target = view.world_point("flower", (RIGHT_GRIP + rng.uniform(-0.008, 0.008), 0.0, 0.0)) + [0.0, 0.0, 0.002]
        yield both(hold_left, ArmTarget(target + [0.0, 0.0, 0.08], down(r_yaw)), speed=0.03, tol=0.006)
        yield both(hold_left, ArmTarget(target, down(r_yaw)), speed=0.015, tol=0.004)
        yield both(hold_left, ArmTarget(target, down(r_yaw), 1.0), speed=0.01, hold=8, timeout=12)
        # 3. the left lets go and backs off up and to its side
        held = ArmTarget(target, down(r_yaw), 1.0)
        yield both(ArmTarget(hold_left.pos, down(np.pi / 2)), held, speed=0.01, hold=4, timeout=20)
        yield both(ArmTarget(hold_left.pos + [0.0, 0.03, 0.07], down(np.pi / 2)), held, speed=0.03, tol=0.015)
        yield both(park[0], held, speed=0.04, tol=0.03)

        # 4. the right turns the flower upright: a quarter turn about the horizontal axis across the stem, so
        #    the gripper points along the stem's old direction and the blossom is on top
        turn = rotvec_to_mat(np.cross(d, [0.0, 0.0, 1.0]) * np.pi / 2)
        upright = mat_to_euler(turn @ euler_to_mat(down(r_yaw)))
        lifted = target + [0.0, 0.0, 0.04]
        yield both(park[0], ArmTarget(lifted, upright, 1.0), speed=0.02, tol=0.01, timeout=150)

        # 5. over the vase, then down into it, release and back out along the hand's axis
        vase = view.pos("vase")
        offset = self._stem_end(view) - view.eef_pos(1)
        top = vase[2] + VASE_H / 2
        over = np.r_[vase[:2] - offset[:2], top + 0.03 - offset[2]]
        yield both(park[0], ArmTarget(over, upright, 1.0), speed=rng.uniform(0.025, 0.035), tol=0.006, hold=2)
        inside = np.r_[over[:2], top - VASE_H + VASE_WALL + 0.025 - offset[2]]
        yield both(park[0], ArmTarget(inside, upright, 1.0), speed=0.012, tol=0.004, hold=2)
        yield both(park[0], ArmTarget(inside, upright, 0.0), speed=0.005, hold=4, timeout=25)
        back = inside - 0.08 * d
        yield both(park[0], ArmTarget(back, upright), speed=0.02, tol=0.01)
        yield both(park[0], ArmTarget(back + [0.0, 0.0, 0.1], upright), speed=0.03, tol=0.02)
