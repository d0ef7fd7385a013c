"""Put Items to Bag and Zip (appendix B, dual arm): the longest task. An item goes into an open bag; one arm
holds the bag still and the other pulls its zipper closed.

The bag is a rigid open box on the right of the table (free to slide and tip), long away from the robots,
with a fin on its right side to hold it by. The zipper pull is a child body on a slide joint along the
opening, from the far end toward the robots; the joint has friction, so pulling drags an unheld bag with it.
As the pull travels, a flap closes over the opening behind it, so the cameras see the bag close. The left
arm puts the item in and pulls the zipper; the right arm holds the bag, so the arms never cross.

S1 `grasp_item`: the left gripper holds the item lifted. S2 `item_in_bag`: the item lies inside the bag and
the left gripper has let go. S3 `hold_bag`: the right gripper holds the fin and the bag stands within 2 cm of
where it started. S4 `grasp_zipper`: the left gripper holds the pull while the right still holds the bag.
S5 `close`: the pull has reached the end of the opening, the item is still inside and the bag still stands
within 3 cm of where it started.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from robosuite.models.objects import CompositeBodyObject

from harmowam_core.envs.sim.objects import Part, build_object
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

LEFT, RIGHT = 0, 1
WALL = 0.005
FIN_OUT = 0.08  # the fin's length out of the right wall: the holding hand stays clear of the pulling one
TAB_Z = 0.017  # the pull's tab centre above its slider
PULL_MARGIN = 0.018  # the pull's travel stops this far from each end wall
ITEM_Y = (0.16, 0.26)  # the item lies on the left of the table, in the region's x range, clear of the bag
LIFT = 0.04
MOVED, MOVED_END = 0.02, 0.03  # how far the bag may have moved when held, and by the end


@dataclass(frozen=True)
class BagShape:
    inner_x: float  # inner half sizes: x along the zipper (away from the robots), y across
    inner_y: float
    height: float
    rgba: tuple
    stripes: tuple | None = None  # colour of vertical stripes on the long walls

    @property
    def travel(self) -> float:
        return 2 * (self.inner_x - PULL_MARGIN)


BAGS = {
    "bag": BagShape(0.07, 0.04, 0.09, (0.2, 0.42, 0.35, 1.0)),
    "striped_bag": BagShape(0.062, 0.046, 0.1, (0.75, 0.15, 0.15, 1.0), stripes=(0.95, 0.95, 0.9, 1.0)),
}
ITEMS = {
    "item": [  # a sponge: yellow foam with a green scrub layer
        Part("box", (0.03, 0.02, 0.013), (0.0, 0.0, -0.004), (0.95, 0.85, 0.2, 1.0), name="foam"),
        Part("box", (0.03, 0.02, 0.004), (0.0, 0.0, 0.013), (0.2, 0.55, 0.25, 1.0), name="scrub"),
    ],
    "toy_car": [
        Part("box", (0.035, 0.017, 0.008), (0.0, 0.0, -0.002), (0.85, 0.1, 0.1, 1.0), name="body"),
        Part("box", (0.016, 0.014, 0.007), (-0.004, 0.0, 0.013), (0.3, 0.55, 0.9, 1.0), name="cabin"),
        *[
            Part(
                "cylinder",
                (0.009, 0.004),
                (sx * 0.022, sy * 0.019, -0.009),
                (0.1, 0.1, 0.1, 1.0),
                quat=(0.7071, 0.7071, 0.0, 0.0),
                name=f"wheel{i}",
            )
            for i, (sx, sy) in enumerate(((1, 1), (1, -1), (-1, 1), (-1, -1)))
        ],
    ],
}


def _bag_parts(shape: BagShape) -> list[Part]:
    ix, iy, h, c = shape.inner_x, shape.inner_y, shape.height, shape.rgba
    ox, oy = ix + WALL, iy + WALL
    parts = [
        Part("box", (ox, oy, WALL / 2), (0.0, 0.0, -h / 2 + WALL / 2), c, name="floor"),
        Part("box", (WALL / 2, iy, h / 2), (ix + WALL / 2, 0.0, 0.0), c, name="far"),
        Part("box", (WALL / 2, iy, h / 2), (-ix - WALL / 2, 0.0, 0.0), c, name="near"),
        Part("box", (ox, WALL / 2, h / 2), (0.0, iy + WALL / 2, 0.0), c, name="left"),
        Part("box", (ox, WALL / 2, h / 2), (0.0, -iy - WALL / 2, 0.0), c, name="right"),
        # the fin the holding hand grasps: thin along x, standing out of the right wall
        Part("box", (0.003, FIN_OUT / 2, 0.025), (0.0, -oy - FIN_OUT / 2, h / 2 - 0.02), c, name="fin"),
        # the closed part of the opening, resized every step to end at the pull
        Part("box", (0.0005, iy, 0.002), (ix, 0.0, h / 2), (0.1, 0.12, 0.1, 1.0), name="flap", visual=True),
    ]
    if shape.stripes is not None:
        for k, x in enumerate(np.linspace(-ox + 0.015, ox - 0.015, 5)):
            for side, y in (("left", oy + 0.0006), ("right", -oy - 0.0006)):
                parts.append(
                    Part(
                        "box",
                        (0.005, 0.0005, h / 2 - 0.004),
                        (x, y, 0.0),
                        shape.stripes,
                        name=f"stripe_{side}{k}",
                        visual=True,
                    )
                )
    return parts


def build_bag(kind: str) -> CompositeBodyObject:
    """The bag: its shell with a free joint and the zipper pull as a child body on a slide joint."""
    shape = BAGS[kind]
    shell = build_object("shell", _bag_parts(shape), density=400.0)
    metal = (0.75, 0.75, 0.8, 1.0)
    pull = build_object(
        "pull",
        [
            Part("box", (0.008, 0.006, 0.003), rgba=metal, name="slider"),
            Part("box", (0.003, 0.01, 0.014), (0.0, 0.0, TAB_Z), metal, name="tab"),  # thin along the travel
        ],
        density=2000.0,
    )
    slide = {
        "type": "slide",
        "axis": "-1 0 0",
        "range": f"0 {shape.travel:.4f}",
        "limited": "true",
        "frictionloss": "2.5",
        "damping": "3",
        "armature": "0.01",
    }
    return CompositeBodyObject(
        "bag",
        [shell, pull],
        [[0.0, 0.0, 0.0], [shape.inner_x - PULL_MARGIN, 0.0, shape.height / 2 + 0.003]],
        object_parents=[None, shell.root_body],
        body_joints={pull.root_body: [slide]},
    )


class BagZip(SimTask):
    name = "bag_zip"
    num_arms = 2
    base_objects = {"item": ["item", "toy_car"], "bag": ["bag", "striped_bag"]}
    region_objects = ("bag",)

    def build(self, variant):
        self.item_kind, self.bag_kind = variant["item"], variant["bag"]
        self.shape = BAGS[self.bag_kind]
        self.item = build_object("item", ITEMS[self.item_kind], density=250.0)
        return {"item": self.item, "bag": build_bag(self.bag_kind)}

    def place(self, rng, region):
        b = sample_points(rng, region, 1, 0.0)[0]
        item_region = type(region)(x=region.x, y=list(ITEM_Y))
        i = sample_points(rng, item_region, 1, 0.0)[0]
        return {
            "bag": Placement(b[0], b[1], self.shape.height / 2 + 0.001, rng.uniform(-0.2, 0.2)),
            "item": Placement(i[0], i[1], -self.item.bottom_offset[2] + 0.001, rng.uniform(-0.5, 0.5)),
        }

    def footprint(self, placements):
        b, i = placements["bag"], placements["item"]
        s = self.shape
        corners = [(sx * s.inner_x, sy * s.inner_y - (FIN_OUT if sy < 0 else 0.0)) for sx in (-1, 1) for sy in (-1, 1)]
        c, si = np.cos(b.yaw), np.sin(b.yaw)
        pts = [np.array([b.x + c * x - si * y, b.y + si * x + c * y]) for x, y in corners]
        return [np.array([b.x, b.y]), np.array([i.x, i.y]), *pts]

    # --------------------------------------------------------------------------------- state
    def on_reset(self, view):
        model = view.sim.model
        self._flap = model.geom_name2id("bag_shell_flap_vis")
        self._flap_size = model.geom_size[self._flap].copy()
        self.rest = view.pos("bag").copy()
        self.item_rest_z = view.pos("item")[2]
        self.on_step(view)

    def on_step(self, view):
        """Close the flap over the opening from the starting end up to the pull."""
        closed = max(self.pulled(view), 0.0005)
        s = self.shape
        model = view.sim.model
        model.geom_size[self._flap] = [closed / 2, self._flap_size[1], self._flap_size[2]]
        model.geom_pos[self._flap][0] = s.inner_x - closed / 2

    def pulled(self, view) -> float:
        """How far the pull has travelled from its start (m)."""
        return view.joint_qpos("bag", "pull_root_joint0")

    def _tab(self, view, above: float = 0.0) -> np.ndarray:
        """The pull's tab centre (raised by `above` along the bag's vertical), where it is now."""
        return view.body_pos("bag_pull_root") + view.mat("bag") @ np.array([0.0, 0.0, TAB_Z + above])

    def item_in_bag(self, view) -> bool:
        s = self.shape
        local = view.mat("bag").T @ (view.pos("item") - view.pos("bag"))
        return bool(abs(local[0]) < s.inner_x and abs(local[1]) < s.inner_y and local[2] < s.height / 2)

    def _bag_still(self, view, limit: float) -> bool:
        return bool(np.linalg.norm(view.pos("bag")[:2] - self.rest[:2]) < limit and view.up("bag") > 0.95)

    def predicates(self, view):
        holding_item = view.grasping(LEFT, "item")
        grasp_item = holding_item and view.pos("item")[2] > self.item_rest_z + LIFT
        in_bag = self.item_in_bag(view) and not holding_item
        hold = view.grasping(RIGHT, "bag", ["bag_shell_fin"]) and self._bag_still(view, MOVED)
        zipper = hold and view.grasping(LEFT, "bag", ["bag_pull_tab"])
        closed = (
            self.pulled(view) > self.shape.travel - 0.006
            and self.item_in_bag(view)
            and self._bag_still(view, MOVED_END)
        )
        return [grasp_item, in_bag, hold, zipper, closed]

    # --------------------------------------------------------------------------------- expert
    def transit_target(self, view):
        p = view.pos("item")  # the left arm picks it first
        return TransitTarget(LEFT, "item", p[:2].copy(), float(p[2] + self.item.top_offset[2]))

    def plan(self, view, rng):
        park = parked(view)
        s = self.shape
        bag_m = view.mat("bag")
        bag_yaw = float(np.arctan2(bag_m[1, 0], bag_m[0, 0]))
        rim = view.pos("bag")[2] + s.height / 2

        # 1. the left arm picks the item, across its width
        m = view.mat("item")
        yaw = wrap_yaw(np.arctan2(m[1, 0], m[0, 0]))
        item = view.pos("item")
        grip = np.r_[item[:2], item[2] + rng.uniform(-0.002, 0.003)]
        above = np.r_[item[:2], 0.15]
        yield both(ArmTarget(above, down(yaw)), park[RIGHT], speed=rng.uniform(0.04, 0.05), tol=0.01)
        yield both(ArmTarget(grip, down(yaw)), park[RIGHT], speed=0.02, tol=0.004)
        yield both(ArmTarget(grip, down(yaw), 1.0), park[RIGHT], speed=0.01, hold=8, timeout=12)
        yield both(ArmTarget(np.r_[item[:2], rim + 0.1], down(yaw), 1.0), park[RIGHT], speed=0.03, tol=0.02)

        # 2. over the bag, the item's length along the opening, lowered to just above the rim and let go
        centre = view.pos("bag")[:2] + rng.uniform(-0.008, 0.008, 2)
        drop_yaw = wrap_yaw(bag_yaw + rng.uniform(-0.1, 0.1))
        yield both(ArmTarget(np.r_[centre, rim + 0.08], down(drop_yaw), 1.0), park[RIGHT], speed=0.035, tol=0.01)
        yield both(ArmTarget(np.r_[centre, rim + 0.03], down(drop_yaw), 1.0), park[RIGHT], speed=0.015, tol=0.006)
        yield both(ArmTarget(np.r_[centre, rim + 0.03], down(drop_yaw)), park[RIGHT], speed=0.01, hold=6, timeout=20)

        # 3. the right holds the bag by its fin, fingers along the bag; the left rises over the pull meanwhile
        across = bag_yaw + np.pi / 2  # not wrapped: turned this way the two wrists stay clear of each other
        fin = view.world_point("bag", (0.0, -(s.inner_y + WALL) - FIN_OUT * rng.uniform(0.65, 0.8), 0.0))
        fin[2] = rim - 0.012 + rng.uniform(-0.002, 0.002)
        tab = self._tab(view)
        over_tab = ArmTarget(tab + [0.0, 0.0, 0.08], down(across))
        yield both(over_tab, ArmTarget(np.r_[fin[:2], rim + 0.06], down(across)), speed=0.035, tol=0.01)
        yield both(over_tab, ArmTarget(fin, down(across)), speed=0.015, tol=0.004)
        yield both(over_tab, ArmTarget(fin, down(across), 1.0), speed=0.01, hold=8, timeout=12)
        hold = ArmTarget(view.eef_pos(RIGHT).copy(), down(across), 1.0)  # where the hand holds it, not where it aimed

        # 4. the left grasps the pull's tab, fingers along the opening
        tab = self._tab(view, 0.003 + rng.uniform(-0.002, 0.002))
        yield both(ArmTarget(tab + [0.0, 0.0, 0.04], down(across)), hold, speed=0.02, tol=0.006)
        yield both(ArmTarget(tab, down(across)), hold, speed=0.012, tol=0.004)
        yield both(ArmTarget(tab, down(across), 1.0), hold, speed=0.01, hold=8, timeout=12)

        # 5. and pulls it along the opening to its end, slowly, re-aiming from where the pull has got to (the
        #    held bag still gives a little)
        along = -view.mat("bag")[:, 0]
        for _ in range(6):
            to_go = s.travel - self.pulled(view)
            if to_go < 0.002:
                break
            end = view.eef_pos(LEFT) + along * (to_go + 0.004)
            yield both(ArmTarget(end, down(across), 1.0), hold, speed=0.008, tol=0.004, hold=2, timeout=120)
        end = view.eef_pos(LEFT).copy()

        # 6. both let go and back off
        yield both(ArmTarget(end, down(across)), hold, speed=0.005, hold=4, timeout=20)
        yield both(ArmTarget(end + [0.0, 0.0, 0.08], down(across)), hold, speed=0.03, tol=0.02)
        yield both(
            ArmTarget(end + [0.0, 0.0, 0.08], down(across)),
            ArmTarget(hold.pos, down(across)),
            speed=0.005,
            hold=4,
            timeout=20,
        )
        yield both(park[LEFT], ArmTarget(hold.pos + [0.0, 0.0, 0.1], down(across)), speed=0.03, tol=0.02)
