"""The robosuite side of the simulated station: one `ManipulationEnv` (single Panda) and one `TwoArmEnv`
(two parallel Pandas) subclass, both built from a `SimTask`, plus `SceneView`, the privileged read access
that stage predicates and scripted experts use.

The table top is 0.8 m above the floor; every position the rest of the package sees is in the table frame
(origin at the centre of the table top, x away from the robots, z up).
"""

from __future__ import annotations

import numpy as np
from robosuite.controllers import load_composite_controller_config
from robosuite.environments.manipulation.manipulation_env import ManipulationEnv
from robosuite.environments.manipulation.two_arm_env import TwoArmEnv
from robosuite.models.arenas import TableArena
from robosuite.models.tasks import ManipulationTask

from harmowam_core.envs.sim.objects import distractor_objects
from harmowam_core.geometry import look_at_quat

TABLE_TOP = np.array([0.0, 0.0, 0.8])
SINGLE_TABLE = (0.8, 0.9, 0.05)
DUAL_TABLE = (0.8, 1.2, 0.05)
DUAL_ARM_OFFSET_Y = 0.32  # each Panda base sits this far left/right of the table centre line
MAX_DELTA_POS = 0.05  # m per control step
MAX_DELTA_ROT = 0.5  # rad per control step

# Fixed cameras (table frame): position and the point they look at. Wrist cameras are the robots' own.
FIXED_CAMERAS = {
    "front": ((0.75, 0.0, 0.55), (-0.02, 0.0, 0.05)),
    "top": ((0.02, 0.0, 1.05), (0.02, 0.0, 0.0)),
    "global": ((0.85, 0.0, 0.7), (-0.05, 0.0, 0.05)),
}
CAMERA_FOVY = {"front": 50, "top": 50, "global": 60}


def controller_config() -> dict:
    """OSC_POSE delta control whose inputs are metres and radians (axis-angle) unscaled."""
    cfg = load_composite_controller_config(controller="BASIC", robot="Panda")
    arm = cfg["body_parts"]["right"]
    out = [MAX_DELTA_POS] * 3 + [MAX_DELTA_ROT] * 3
    arm.update(input_max=out, input_min=[-v for v in out], output_max=out, output_min=[-v for v in out])
    cfg["body_parts"] = {"right": arm}
    return cfg


class _StationMixin:
    """Model building and object placement shared by the single- and dual-arm robosuite environments."""

    task = None  # SimTask, set before robosuite's constructor runs
    variant: dict = {}
    with_distractors = False

    def reward(self, action=None):
        return 0.0

    def _build_arena(self, table_size):
        arena = TableArena(table_full_size=table_size, table_friction=(1.0, 5e-3, 1e-4), table_offset=TABLE_TOP)
        arena.set_origin([0, 0, 0])
        for role, (pos, target) in FIXED_CAMERAS.items():
            world_pos = np.array(pos) + TABLE_TOP
            quat = look_at_quat(world_pos, np.array(target) + TABLE_TOP)
            arena.set_camera(f"harmowam_{role}", world_pos, quat, camera_attribs={"fovy": str(CAMERA_FOVY[role])})
        return arena

    def _build_model(self, arena):
        self.task_objects = self.task.build(self.variant)
        self.distractors = distractor_objects() if self.with_distractors else []
        self.model = ManipulationTask(
            mujoco_arena=arena,
            mujoco_robots=[robot.robot_model for robot in self.robots],
            mujoco_objects=list(self.task_objects.values()) + self.distractors,
        )

    def _setup_references(self):
        super()._setup_references()
        self.object_body_ids = {
            name: self.sim.model.body_name2id(obj.root_body) for name, obj in self.task_objects.items()
        }
        self.distractor_body_ids = [self.sim.model.body_name2id(d.root_body) for d in self.distractors]


class SingleArmStation(_StationMixin, ManipulationEnv):
    def __init__(self, task, variant, with_distractors, **kwargs):
        self.task, self.variant, self.with_distractors = task, variant, with_distractors
        super().__init__(robots=["Panda"], **kwargs)

    def _load_model(self):
        super()._load_model()
        robot = self.robots[0].robot_model
        robot.set_base_xpos(robot.base_xpos_offset["table"](SINGLE_TABLE[0]))
        self._build_model(self._build_arena(SINGLE_TABLE))


class DualArmStation(_StationMixin, TwoArmEnv):
    def __init__(self, task, variant, with_distractors, **kwargs):
        self.task, self.variant, self.with_distractors = task, variant, with_distractors
        super().__init__(robots=["Panda", "Panda"], env_configuration="parallel", **kwargs)

    def _load_model(self):
        super()._load_model()
        # robots[0] on the right (-y), robots[1] on the left (+y), both facing +x
        for robot, side in zip(self.robots, (-1.0, 1.0), strict=True):
            xpos = np.array(robot.robot_model.base_xpos_offset["table"](DUAL_TABLE[0]))
            robot.robot_model.set_base_xpos(xpos + np.array([0.0, side * DUAL_ARM_OFFSET_Y, 0.0]))
        self._build_model(self._build_arena(DUAL_TABLE))


class SceneView:
    """Read access to the simulator for predicates and experts; positions in the table frame.

    Arms are indexed in the order of the action vector: single arm 0; dual arm 0 = left, 1 = right.
    """

    def __init__(self, env: SingleArmStation | DualArmStation):
        self.env = env
        self.sim = env.sim
        robots = list(env.robots)
        self.robots = robots if len(robots) == 1 else [robots[1], robots[0]]  # [left, right]
        self._geom_cache: dict[str, list[int]] = {}

    # objects
    def pos(self, name: str) -> np.ndarray:
        return self.sim.data.body_xpos[self.env.object_body_ids[name]] - TABLE_TOP

    def mat(self, name: str) -> np.ndarray:
        return self.sim.data.body_xmat[self.env.object_body_ids[name]].reshape(3, 3)

    def up(self, name: str) -> float:
        """Cosine between the object's z axis and the world's: 1 standing, 0 lying on its side."""
        return float(self.mat(name)[2, 2])

    def obj(self, name: str):
        return self.env.task_objects[name]

    def geom_ids(self, name: str) -> list[int]:
        if name not in self._geom_cache:
            self._geom_cache[name] = [self.sim.model.geom_name2id(g) for g in self.obj(name).contact_geoms]
        return self._geom_cache[name]

    def world_point(self, name: str, local) -> np.ndarray:
        """A point given in the object's frame, in the table frame."""
        return self.pos(name) + self.mat(name) @ np.asarray(local, float)

    def touching(self, a: str, b: str | None = None) -> bool:
        """Whether object a touches object b (any geom); b None means anything but a itself."""
        ga = set(self.geom_ids(a))
        gb = set(self.geom_ids(b)) if b is not None else None
        data = self.sim.data
        for i in range(data.ncon):
            c = data.contact[i]
            g1, g2 = c.geom1, c.geom2
            if g1 in ga and (gb is None and g2 not in ga or gb is not None and g2 in gb):
                return True
            if g2 in ga and (gb is None and g1 not in ga or gb is not None and g1 in gb):
                return True
        return False

    # arms
    def eef_pos(self, arm: int = 0) -> np.ndarray:
        robot = self.robots[arm]
        return self.sim.data.site_xpos[robot.eef_site_id["right"]] - TABLE_TOP

    def eef_mat(self, arm: int = 0) -> np.ndarray:
        robot = self.robots[arm]
        return self.sim.data.site_xmat[robot.eef_site_id["right"]].reshape(3, 3)

    def gripper_closed(self, arm: int = 0) -> float:
        """How closed the fingers are: 0 fully open, 1 fully closed."""
        robot = self.robots[arm]
        q = self.sim.data.qpos[robot._ref_gripper_joint_pos_indexes["right"]]
        return float(np.clip(1.0 - (q[0] - q[1]) / 0.08, 0.0, 1.0))

    def grasping(self, arm: int, name: str, geoms: list[str] | None = None) -> bool:
        """Both fingers (pad or finger body) touch the object, or only the named geoms of it: a thin object
        held above the pads counts too."""
        finger_geoms = self.robots[arm].gripper["right"].important_geoms
        fingers = [finger_geoms["left_finger"], finger_geoms["right_finger"]]
        return bool(self.env._check_grasp(gripper=fingers, object_geoms=geoms or self.obj(name)))

    def body_pos(self, body: str) -> np.ndarray:
        """Position of any named body (a part of an articulated object), in the table frame."""
        return self.sim.data.body_xpos[self.sim.model.body_name2id(body)] - TABLE_TOP

    def joint_qpos(self, obj_name: str, joint: str) -> float:
        return float(self.sim.data.get_joint_qpos(f"{self.obj(obj_name).naming_prefix}{joint}"))
