"""The simulated Franka station: a robosuite scene behind the `Env` protocol.

    station = SimStation(load_recipe("stack_cans"))
    obs = station.reset(seed=3, ood="position")
    expert = station.expert()                    # the task's scripted expert, privileged state
    while not all(station.stage_success()):
        obs = station.step(expert.act())

The robosuite environment is built once per scene variant (substitute objects, distractors) and reused
across resets; background, position and object OOD are applied at reset from the recipe.

Rendering is tuned for small camera images on a CPU (EGL software rendering): the offscreen framebuffer is
sized to the largest camera instead of robosuite's 640 x 480, without multisampling, and with a 1024-pixel
shadow map. Shadows and lighting stay; at 96 x 96 this halves the time of a step with three cameras.
A step with `images=False` renders nothing (its observation has no images): an evaluated policy reads images
only when it plans, so an evaluation without videos renders the two frames before each plan, not every frame.
The images a step does render are the same either way (`tests/test_sim.py`).
"""

from __future__ import annotations

import numpy as np

from harmowam_core.config import Recipe, Region
from harmowam_core.envs.base import Observation, Station
from harmowam_core.envs.commands import bounded_rotation, check_finite
from harmowam_core.envs.gripper import GripperHysteresis
from harmowam_core.envs.ood import check_protocol
from harmowam_core.envs.sim.objects import MAX_DISTRACTORS
from harmowam_core.envs.sim.scene import (
    MAX_DELTA_POS,
    MAX_DELTA_ROT,
    TABLE_TOP,
    DualArmStation,
    SceneView,
    SingleArmStation,
    controller_config,
)
from harmowam_core.envs.sim.tasks import task_for
from harmowam_core.envs.sim.tasks.base import Placement, WaypointFollower, sample_points
from harmowam_core.geometry import GRIPPER_HOME, euler_to_mat, mat_to_euler, yaw_quat

SHADOW_MAP = 1024
WRIST_CAMERAS = {"wrist": "robot0_eye_in_hand", "wrist_right": "robot0_eye_in_hand", "wrist_left": "robot1_eye_in_hand"}
PERIPHERY = Region(x=[-0.3, 0.3], y=[-0.38, 0.38])


def camera_name(role: str) -> str:
    return WRIST_CAMERAS.get(role, f"harmowam_{role}")


class SimStation(Station):
    """The `Env` of the simulator. `render=False` skips cameras (observations carry no images), for fast
    expert evaluation."""

    def __init__(self, recipe: Recipe, render: bool = True):
        self.recipe = recipe
        self.task = task_for(recipe)
        self.num_arms = 1 if recipe.arms == "single" else 2
        self.instruction = recipe.instruction
        self.stage_names = [s.name for s in recipe.stages]
        self.render = render
        self.cameras = {cam.role: cam for cam in recipe.cameras}
        self._env = None
        self._variant_key = None
        self._rendering = render  # whether env.step renders the cameras (see _gate_cameras)
        self.view: SceneView | None = None
        self.home = [GRIPPER_HOME] * self.num_arms
        self.ood = "none"
        self.rng = np.random.default_rng(0)
        self.steps = 0
        self._latched: list[bool] = []
        self._held: list[int] = []
        self._grippers = [GripperHysteresis() for _ in range(self.num_arms)]

    # ------------------------------------------------------------------ protocol
    def reset(self, seed: int | None = None, ood: str = "none") -> Observation:
        check_protocol(ood)
        self.rng = np.random.default_rng(seed)
        self.ood = ood
        env = self._ensure_env(objects=ood == "objects", distractors=ood == "background")
        self._rendering = False  # nothing reads the frames of the reset and the settling steps
        env.reset()
        self._tune_renderer()
        region = self.recipe.ood.position.test_region if ood == "position" else self.recipe.ood.position.train_region
        self.placements = self.task.place(self.rng, region)
        self._apply_placements(self.placements)
        self._apply_background(ood == "background")
        env.sim.forward()
        self.view = SceneView(env)
        self._grippers = [GripperHysteresis() for _ in range(self.num_arms)]  # open, as the fingers start
        self._settle()
        self.task.on_reset(self.view)
        self.steps = 0
        self._latched = [False] * len(self.stage_names)
        self._held = [0] * len(self.stage_names)
        self._rendering = self.render  # the first observation always has its images
        return self._observation(env._get_observations(force_update=True))

    def step(self, action: np.ndarray, images: bool = True) -> Observation:
        action = check_finite(action, 7 * self.num_arms)  # before anything reaches MuJoCo, as the real station
        self._rendering = self.render and images  # for this step only
        try:
            raw = self._env.step(self._native_action(action))[0]
            self.steps += 1
            self.task.on_step(self.view)
            self._update_stages()
            return self._observation(raw)
        finally:
            self._rendering = self.render

    def stage_success(self) -> list[bool]:
        return list(self._latched)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> SimStation:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ extras
    def expert(self, seed: int | None = None, detour: float = 0.0) -> WaypointFollower:
        """The task's scripted expert for the episode just reset (privileged simulator state); `detour`: the
        probability of a recovery detour before each waypoint (`WaypointFollower`)."""
        rng = np.random.default_rng(seed) if seed is not None else self.rng
        return WaypointFollower(self.view, self.task.plan(self.view, rng), self.home, rng, detour=detour)

    def state(self) -> np.ndarray:
        parts = []
        for arm in range(self.num_arms):
            rel = self.view.eef_mat(arm) @ self.home[arm].T
            parts.append(np.r_[self.view.eef_pos(arm), mat_to_euler(rel), self.view.gripper_closed(arm)])
        return np.concatenate(parts).astype(np.float32)

    @property
    def raw_env(self):
        """The underlying robosuite environment (for benchmarks and teleoperation devices)."""
        return self._env

    # ------------------------------------------------------------------ internals
    def _ensure_env(self, objects: bool, distractors: bool):
        key = (objects, distractors)
        if self._env is not None and self._variant_key == key:
            return self._env
        self.close()
        variant = self.task.variant(self.recipe.ood.objects.substitutes if objects else None)
        cls = SingleArmStation if self.num_arms == 1 else DualArmStation
        cams = [camera_name(c.role) for c in self.recipe.cameras]
        self._env = cls(
            self.task,
            variant,
            distractors,
            controller_configs=controller_config(),
            initialization_noise=None,
            use_camera_obs=self.render,
            has_renderer=False,
            has_offscreen_renderer=self.render,
            camera_names=cams,
            camera_heights=[c.height for c in self.recipe.cameras],
            camera_widths=[c.width for c in self.recipe.cameras],
            control_freq=self.recipe.fps,
            horizon=10**9,
            ignore_done=True,
            hard_reset=False,
        )
        self._variant_key = key
        if self.render:
            self._gate_cameras()
        self._default_lights = (self._env.sim.model.light_diffuse.copy(), self._env.sim.model.light_dir.copy())
        return self._env

    def _gate_cameras(self) -> None:
        """Wrap robosuite's camera sensors so that they render only while `_rendering` is on. The observables
        themselves stay enabled: switching one off and on again resets its sampling clock, and it would then
        sample at another physics substep than one that stayed on (a different image of the same step)."""
        from robosuite.utils.observables import sensor

        for cam in self.recipe.cameras:
            name = f"{camera_name(cam.role)}_image"
            render = self._env._observables[name]._sensor
            blank = np.zeros((cam.height, cam.width, 3), dtype=np.uint8)

            @sensor(modality=render.__modality__)
            def gated(obs_cache, render=render, blank=blank):
                return render(obs_cache) if self._rendering else blank

            self._env.modify_observable(name, "sensor", gated)

    def _tune_renderer(self) -> None:
        context = getattr(self._env.sim, "_render_context_offscreen", None) if self.render else None
        if context is None or context.con.offSamples == 0:
            return
        vis = self._env.sim.model.vis
        vis.quality.offsamples = 0
        vis.quality.shadowsize = SHADOW_MAP
        vis.global_.offwidth = max(c.width for c in self.recipe.cameras)
        vis.global_.offheight = max(c.height for c in self.recipe.cameras)
        context.con.free()
        context._set_mujoco_context_and_buffers()

    def _apply_placements(self, placements: dict[str, Placement]):
        env = self._env
        for name, p in placements.items():
            obj = env.task_objects[name]
            pos = np.array([p.x, p.y, p.z]) + TABLE_TOP
            quat = yaw_quat(p.yaw)
            if obj.joints and obj.joint_specs[0].get("type", "free") == "free":
                env.sim.data.set_joint_qpos(obj.joints[0], np.concatenate([pos, quat]))
            else:
                body = env.object_body_ids[name]
                env.sim.model.body_pos[body] = pos
                env.sim.model.body_quat[body] = quat

    def _apply_background(self, on: bool):
        env = self._env
        diffuse, direction = self._default_lights
        env.sim.model.light_diffuse[:] = diffuse
        env.sim.model.light_dir[:] = direction
        if not on:
            return
        spec = self.recipe.ood.background
        lo, hi = spec.light_intensity
        scale = self.rng.choice([self.rng.uniform(lo, 0.8), self.rng.uniform(1.2, hi)]) if lo < 0.8 else hi
        env.sim.model.light_diffuse[:] = np.clip(diffuse * scale, 0.0, 1.0)
        turn = np.deg2rad(spec.light_direction_deg) * self.rng.choice([-1.0, 1.0])
        rot = euler_to_mat(np.array([0.0, turn / 2, turn]))
        env.sim.model.light_dir[:] = direction @ rot.T
        n = int(self.rng.integers(spec.distractors[0], spec.distractors[1] + 1))
        n = min(n, MAX_DISTRACTORS)
        targets = self.task.footprint(self.placements)
        near = n // 2
        near_region = Region(
            x=[min(t[0] for t in targets) - 0.12, max(t[0] for t in targets) + 0.12],
            y=[min(t[1] for t in targets) - 0.12, max(t[1] for t in targets) + 0.12],
        )
        pts = sample_points(self.rng, near_region, near, 0.09, targets)
        pts += sample_points(self.rng, PERIPHERY, n - near, 0.09, targets + pts)
        self.distractor_positions = pts
        for i, body in enumerate(env.distractor_body_ids):
            if i < n:
                obj = env.distractors[i]
                z = -obj.bottom_offset[2] + 0.001
                env.sim.model.body_pos[body] = np.r_[pts[i], z] + TABLE_TOP
                env.sim.model.body_quat[body] = yaw_quat(self.rng.uniform(-np.pi, np.pi))
            else:  # unused: far below the floor, out of every camera's view
                env.sim.model.body_pos[body] = np.array([0.0, 0.0, -5.0 - i])
        geoms = np.flatnonzero(np.isin(env.sim.model.geom_bodyid, env.distractor_body_ids))
        env.sim.model.geom_rgba[geoms, :3] = self.rng.uniform(0.1, 1.0, (len(geoms), 3))

    def visible_distractors(self) -> int:
        """How many distractors stand on the table in the current scene (0 outside background OOD)."""
        if self._env is None or not self._env.distractors:
            return 0
        return int(sum(self._env.sim.model.body_pos[b][2] > 0 for b in self._env.distractor_body_ids))

    def _settle(self, steps: int = 4):
        """Let dropped objects come to rest before the episode starts (arm holding still, gripper open)."""
        still = self._native_action(np.zeros(7 * self.num_arms))
        for _ in range(steps):
            self._env.step(still)

    def _native_action(self, action: np.ndarray) -> np.ndarray:
        """Our action (7 per arm: metres, euler radians, gripper in [0, 1]) -> robosuite's OSC_POSE input
        (metres, axis-angle, fingers -1 open / +1 close). Each translation is clipped to MAX_DELTA_POS and each
        Euler angle to MAX_DELTA_ROT before it is converted (`envs.commands.bounded_rotation`). The gripper
        number goes through the same 0.4 / 0.6 hysteresis as the real station (`envs.gripper`): robosuite
        integrates the finger command's sign, so a raw `2a - 1` of 0.49 would open a closed grasp."""
        per_arm = []
        for arm in range(self.num_arms):
            a = action[7 * arm : 7 * arm + 7]
            dpos = np.clip(a[:3], -MAX_DELTA_POS, MAX_DELTA_POS)
            rv = bounded_rotation(a[3:6], MAX_DELTA_ROT)  # each angle saturated before it can wrap
            grip = 1.0 if self._grippers[arm].update(a[6]) else -1.0
            per_arm.append(np.r_[dpos, rv, grip])
        if self.num_arms == 2:  # ours: [left, right]; robosuite: [robot0 = right, robot1 = left]
            per_arm = per_arm[::-1]
        return np.concatenate(per_arm)

    def _update_stages(self):
        preds = self.task.predicates(self.view)
        for k, ok in enumerate(preds):
            if self._latched[k]:
                continue
            if ok and all(self._latched[:k]):
                self._held[k] += 1
                if self._held[k] >= self.task.hold_steps:
                    self._latched[k] = True
            else:
                self._held[k] = 0
            break

    def _observation(self, raw: dict) -> Observation:
        images = {}
        if self._rendering:
            for role in self.cameras:
                images[role] = np.ascontiguousarray(raw[f"{camera_name(role)}_image"][::-1])
        return Observation(images=images, state=self.state(), instruction=self.instruction, info={"step": self.steps})
