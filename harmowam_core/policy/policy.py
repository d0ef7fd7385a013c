"""The HarmoWAM policy in closed loop (paper section 3.4): observation -> world model -> gate -> routed expert.

    policy = HarmoWAMPolicy.from_bundle("bundles/stack_cans-20261124-120000", router="gate")
    policy.reset()
    action = policy.act(obs)      # replans every `execute_steps` actions; obs: envs.base.Observation
    policy.last_plan              # the chunk, which expert it came from, p(interaction), the imagined future

Each plan runs the world model on the world-model camera (front, or global for dual arm), both experts on
its imagined future and the current images, and the gate on the current images; the router (see
`routers`) picks the chunk. The policy executes `execute_steps` of its 12 actions before planning again.

Async mode (`async_inference=True`) plans the next chunk in a background thread while the current one
executes: when `lead` actions of the current chunk remain, planning starts from the observation of that
moment, and once they have run, the new chunk continues from its action `lead` (its first `lead` actions are
for steps already taken). So the model's latency hides behind `lead` control steps; `execute_steps` defaults to
chunk - lead there. `close()` (or a `with` block) stops the thread.

A plan on the planning thread runs as fast as on the caller's: it takes the caller's torch thread count, and it
runs as the only thread holding an OpenMP team (see `release_openmp_team`).
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import re
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harmowam_core.action_space import deltas_from_targets, state_change
from harmowam_core.config import Recipe
from harmowam_core.data.windows import expert_inputs, resize_frames
from harmowam_core.errors import HarmoWAMError, ParameterError
from harmowam_core.models.experts import Experts
from harmowam_core.models.world_model import WorldModelInterface, frame_to_latent, load_world_model
from harmowam_core.policy.bundle import bundle_recipe, verify_bundle
from harmowam_core.policy.routers import check_router, route
from harmowam_core.timing import timed


@functools.cache
def _libgomp() -> ctypes.CDLL | None:
    """The GNU OpenMP runtime torch's CPU kernels run on (Linux wheels bundle it), if it is loaded; else None."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return None
    loaded = sorted(set(re.findall(r"\S*/libgomp[^/\s]*\.so[^/\s]*", maps)))
    ours = [p for p in loaded if p.startswith(os.path.dirname(torch.__file__))]  # torch's own copy first
    for path in ours + loaded:
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)  # the copy already loaded, never a new one
            pause = lib.omp_pause_resource_all  # OpenMP 5.0 (GCC 9+)
        except (OSError, AttributeError):
            continue
        pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
        return lib
    return None


def release_openmp_team() -> bool:
    """Hand back the OpenMP worker threads that torch kept for the calling thread; its next parallel op makes new
    ones. Returns whether there was a GNU OpenMP runtime to ask.

    Why: libgomp keeps a team of threads for every thread that ran a parallel op, and once it manages more threads
    than there are CPUs it stops spin-waiting between parallel regions and puts its threads to sleep instead. With
    the caller's idle team beside the planning thread's, each of a plan's thousands of small ops then pays a
    futex wake-up: on 2 cores a plan took 0.15 s on the planning thread against 0.08 s on the caller's. Cheap
    (well under a microsecond) when the calling thread holds no team."""
    lib = _libgomp()
    if lib is None:
        return False
    lib.omp_pause_resource_all(1)  # omp_pause_soft; -1 inside a parallel region, where there is nothing to do
    return True


_last_planner_lock = threading.Lock()
_last_planner: weakref.ref | None = None  # the planning thread (its pool) that planned last: it may keep a team


def _only_team_for(pool: ThreadPoolExecutor | None) -> None:
    """Before a plan on `pool`'s thread (None: on the calling thread), leave that thread the only one to keep an
    OpenMP team: the caller hands its own back when the plan runs elsewhere, and the planning thread of the
    policy that planned last, if another, hands back its own once idle. A planning thread keeps its team from
    one plan to the next: a new team each plan cost about 3% of the throughput on an instant station."""
    global _last_planner
    if pool is not None:
        release_openmp_team()
    with _last_planner_lock:
        last = _last_planner() if _last_planner is not None else None
        _last_planner = weakref.ref(pool) if pool is not None else None
    if last is not None and last is not pool:
        try:
            last.submit(release_openmp_team)
        except RuntimeError:  # shut down: its thread, and with it its team, are gone
            pass


@dataclass
class Plan:
    chunk: np.ndarray  # (12, A): the actions to execute (absolute targets when the experts predict those)
    used: str  # "predictive", "reactive" or "average"
    p_interaction: float
    imagined: np.ndarray  # (13, h, w, 3) uint8: the world model's future of the world-model camera
    predictive: np.ndarray
    reactive: np.ndarray


def plan_settings(
    chunk: int,
    default_denoising: int,
    execute_steps: int | None = None,
    denoising_steps: int | None = None,
    async_inference: bool = False,
    lead: int | None = None,
) -> tuple[int, int, int]:
    """(lead, execute_steps, denoising_steps) of a policy whose experts predict `chunk` actions: None takes the
    default (lead: chunk // 3 in async mode, 0 in sync mode; execute_steps: chunk - lead; denoising_steps:
    `default_denoising`, the world model's). A given value means what it says: 0 is refused, never the default.
    Raises ParameterError naming the parameter (`execute_steps: must be 1..12, got 0`)."""
    if async_inference:
        lead = max(1, chunk // 3) if lead is None else lead
        if not 1 <= lead < chunk:
            raise ParameterError("lead", f"must be 1..{chunk - 1} (the chunk is {chunk} actions), got {lead}")
    else:
        lead = 0
    execute = chunk - lead if execute_steps is None else execute_steps
    if not 1 <= execute <= chunk - lead:
        why = f" (chunk {chunk} minus lead {lead} in async mode)" if async_inference else f" (the chunk is {chunk})"
        raise ParameterError("execute_steps", f"must be 1..{chunk - lead}{why}, got {execute}")
    if async_inference and lead > execute:
        raise ParameterError("lead", f"must be 1..execute_steps ({execute}), got {lead}")
    denoise = default_denoising if denoising_steps is None else denoising_steps
    if denoise < 1:
        raise ParameterError("denoising_steps", f"must be at least 1, got {denoise}")
    return lead, execute, denoise


def check_policy_options(
    bundle: str | Path,
    execute_steps: int | None = None,
    denoising_steps: int | None = None,
    async_inference: bool = False,
) -> None:
    """The run-time options of a verified bundle's policy checked as the policy will (`plan_settings`), from its
    saved configurations alone, before any model loads: ParameterError for a bad value."""
    from harmowam_core.models.experts import CONFIG_NAME as EXPERTS_CONFIG
    from harmowam_core.models.world_model import CONFIG_NAME as WM_CONFIG

    bundle = Path(bundle)
    try:
        chunk = int(json.loads((bundle / "experts" / EXPERTS_CONFIG).read_text())["config"]["chunk"])
        default = int(json.loads((bundle / "world_model" / WM_CONFIG).read_text()).get("denoising_steps", 1))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise HarmoWAMError(f"{bundle}: cannot read the models' configurations ({err}); re-export the bundle") from None
    plan_settings(chunk, default, execute_steps, denoising_steps, async_inference)


class HarmoWAMPolicy:
    def __init__(
        self,
        world_model: WorldModelInterface,
        experts: Experts,
        recipe: Recipe,
        router: str = "gate",
        execute_steps: int | None = None,
        denoising_steps: int | None = None,
        seed: int = 0,
        async_inference: bool = False,
        lead: int | None = None,
        device: str | torch.device | None = None,
    ):
        check_router(router)
        if device is not None:
            world_model, experts = world_model.to(device), experts.to(device)
        self.wm, self.experts, self.recipe, self.router = world_model.eval(), experts.eval(), recipe, router
        self.chunk = experts.config.chunk
        self.async_inference = async_inference
        self.lead, self.execute_steps, self.denoising_steps = plan_settings(
            self.chunk, world_model.config.denoising_steps, execute_steps, denoising_steps, async_inference, lead
        )
        self.threshold = float(recipe.gate.threshold)
        self.camera = "global" if recipe.arms == "dual" else "front"  # the world model's camera role
        roles = {c.name: c.role for c in recipe.cameras}  # the experts know dataset names
        self.camera_names = experts.config.cameras or list(roles)  # what the crops are keyed by
        self.cameras = [roles.get(name, name) for name in self.camera_names]  # what observations are keyed by
        self.seed = seed
        self.frame_latent = frame_to_latent(world_model.config.num_frames, world_model.codec.temporal)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="harmowam-plan") if async_inference else None
        self._pending: Future | None = None
        self.timings: dict[str, float] = {}  # seconds per part, summed over the plans since reset()
        self.plans = 0
        self.reset()

    @classmethod
    def from_bundle(cls, path: str | Path, **kwargs) -> HarmoWAMPolicy:
        """The policy of an exported bundle (`policy.bundle`); `kwargs` as the constructor's (router, ...)."""
        return cls.from_bundle_routers(path, [kwargs.pop("router", "gate")], **kwargs)[0]

    @classmethod
    def from_bundle_routers(
        cls, path: str | Path, routers: list[str], verify: bool = True, **kwargs
    ) -> list[HarmoWAMPolicy]:
        """One policy per router, all on the bundle's one loaded world model and experts (side-by-side
        evaluation). Raises HarmoWAMError for a missing, incomplete, truncated or altered bundle (`verify_bundle`)
        or an unknown router. `verify=False` skips the hashes, for a caller that verified the bundle itself
        (evaluation workers: `evaluate` and `deploy` check it once before any worker starts, so a paper-size
        bundle is not read again by every worker process)."""
        path = Path(path)
        if verify:
            verify_bundle(path)
        for router in routers:
            check_router(router)
        recipe = bundle_recipe(path)
        wm, experts = load_world_model(path / "world_model"), Experts.from_pretrained(path / "experts")
        return [cls(wm, experts, recipe, router=router, **kwargs) for router in routers]

    def reset(self) -> None:
        """Start a new episode: forget queued actions and any plan in flight, reseed, zero the timings."""
        if self._pending is not None:
            self._pending.cancel()
            try:
                self._pending.result()
            except Exception:  # noqa: BLE001 - a failed plan of the old episode does not matter any more
                pass
        self._pending = None
        self.queue: list[np.ndarray] = []
        self.last_plan: Plan | None = None
        self.step_in_plan = 0  # index into last_plan.imagined of the frame the next action leads to
        self.previous_images: dict[str, np.ndarray] | None = None  # the cameras one step before the latest obs
        self.previous_state: np.ndarray | None = None  # and the state
        self.generator = torch.Generator(device=self.wm.device).manual_seed(self.seed)
        self.timings, self.plans = {}, 0

    def close(self) -> None:
        self.reset()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> HarmoWAMPolicy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- planning
    @torch.no_grad()
    def plan(
        self,
        images: dict[str, np.ndarray],
        state: np.ndarray,
        instruction: str,
        previous: dict[str, np.ndarray] | None = None,
        previous_state: np.ndarray | None = None,
    ) -> Plan:
        """One control cycle's chunk from the current images (role -> (H, W, 3) uint8) and state; `previous` holds
        the images one control step earlier (None at an episode's start) for the world model and the gate,
        `previous_state` the state then (None: the current one, nothing moved) for a predictive expert with
        `obs_steps` 2."""
        missing = [c for c in [self.camera, *self.cameras] if c not in images]
        if missing:
            raise HarmoWAMError(f"the observation lacks the camera(s) {', '.join(missing)}")
        timings = self.timings
        current = torch.from_numpy(np.ascontiguousarray(images[self.camera])).permute(2, 0, 1).unsqueeze(0)
        before = None
        if previous is not None:
            before = torch.from_numpy(np.ascontiguousarray(previous[self.camera])).permute(2, 0, 1)[None]
        with timed(timings, "world model"):
            out = self.wm.predict(
                current, [instruction], steps=self.denoising_steps, generator=self.generator, previous=before
            )
        imagined = (out.frames * 255).round().clamp(0, 255).to(torch.uint8)  # (1, 13, 3, h, w)
        size = self.experts.predictive.config.image_size  # cropped and resized as in training
        boxes = self.experts.predictive.config.crops or {}

        def cameras(images: dict[str, np.ndarray]) -> torch.Tensor:  # (cams, 3, S, S) uint8
            return torch.stack(
                [
                    resize_frames(images[role][None], [size, size], boxes.get(name))[0]
                    for role, name in zip(self.cameras, self.camera_names, strict=True)
                ]
            )

        motion = previous is not None and self.experts.config.gate.motion  # only a motion gate reads them
        change = None if previous_state is None else torch.from_numpy(state_change(state, previous_state))
        inputs = expert_inputs(
            cameras(images),
            cameras(previous) if motion else None,
            torch.as_tensor(np.asarray(state, dtype=np.float32)),
            instruction,
            imagined[0, 1 : self.chunk + 1],
            out.hidden[0],
            self.frame_latent,
            change,
        )
        batch = {k: [v] if isinstance(v, str) else v.unsqueeze(0) for k, v in inputs.items()}  # a batch of one
        acts = self.experts.act(batch, generator=self.generator, timings=timings)
        self.plans += 1
        p = float(acts["p_interaction"][0])
        predictive, reactive = acts["predictive"][0].cpu().numpy(), acts["reactive"][0].cpu().numpy()
        chunk, used = route(self.router, p, predictive, reactive, self.threshold)
        return Plan(
            chunk=np.asarray(chunk, dtype=np.float32),
            used=used,
            p_interaction=p,
            imagined=imagined[0].permute(0, 2, 3, 1).cpu().numpy(),
            predictive=predictive,
            reactive=reactive,
        )

    def act(self, obs) -> np.ndarray:
        """The next action for an `Observation`; plans a new chunk when the executed part of the last is used up."""
        if not self.async_inference:
            if not self.queue:
                _only_team_for(None)
                self._start_chunk(self.plan(obs.images, obs.state, obs.instruction, *self._previous()), offset=0)
        else:
            if not self.queue:
                if self._pending is None:  # the first step of an episode: nothing was planned ahead
                    # on the planning thread too, so that torch keeps threads for that thread alone
                    first = self._plan_ahead(obs.images, obs.state, obs.instruction, *self._previous())
                    self._start_chunk(first.result(), offset=0)
                else:
                    plan, self._pending = self._pending.result(), None
                    self._start_chunk(plan, offset=self.lead)
            if len(self.queue) == self.lead and self._pending is None:
                images = {k: np.array(v, copy=True) for k, v in obs.images.items()}
                state = np.array(obs.state, copy=True)
                self._pending = self._plan_ahead(images, state, obs.instruction, *self._previous())
        self.observe(obs)
        self.step_in_plan += 1
        action = self.queue.pop(0)
        targets = self.experts.config.action_targets
        if targets in ("absolute", "pose"):  # a target: the delta from the state observed now
            action = deltas_from_targets(action, np.asarray(obs.state, dtype=np.float32), rotation=targets == "pose")
        return action

    def _previous(self) -> tuple[dict[str, np.ndarray] | None, np.ndarray | None]:
        """The images and state one control step before the observation a plan starts from. Raises HarmoWAMError
        where that step's images were skipped (a rollout that did not step with `images=needs_images()`): the
        plan would read a still scene beside a moving state."""
        if self.previous_state is not None and self.previous_images is None:
            raise HarmoWAMError("the station skipped the images of the step before a plan: step with needs_images()")
        return self.previous_images, self.previous_state

    def needs_images(self) -> bool:
        """Whether the next observation's images will be read: by the plan of the next `act` or, as the images
        one control step earlier, by the plan of the one after. Sync mode plans when the queue runs out; async
        mode when `lead` actions are left (after the plan in flight became the queue, if the queue ran out). A
        rollout passes it to `Env.step(images=...)`: in the simulator an evaluation then renders 2 of every
        `execute_steps` steps."""
        left = len(self.queue)
        if not self.async_inference:
            return left <= 1
        acts_before_plan = left - self.lead if left >= self.lead else left + self.execute_steps - self.lead
        return acts_before_plan <= 1

    def observe(self, obs) -> None:
        """Keep an `Observation` as the latest one: the next plan reads its images and state as one control step
        earlier. `act` calls it; call it for steps another controller took (a scripted approach or an operator
        before a handover) so that the policy's first plan sees the motion that led there."""
        # an observation without images (a step `needs_images` let the station skip): `_previous` refuses to plan on it
        cams = [self.camera, *self.cameras]
        self.previous_images = {c: np.array(obs.images[c], copy=True) for c in cams} if obs.images else None
        self.previous_state = np.array(obs.state, dtype=np.float32, copy=True)

    def _plan_ahead(self, images, state, instruction, previous, previous_state) -> Future:
        """Start a plan on the planning thread, with the caller's torch thread count and as the only thread that
        keeps an OpenMP team (two would halve its speed; see `release_openmp_team`)."""
        _only_team_for(self._pool)
        return self._pool.submit(
            self._plan_with_threads, torch.get_num_threads(), images, state, instruction, previous, previous_state
        )

    def _plan_with_threads(self, threads: int, *args) -> Plan:
        if torch.get_num_threads() != threads:  # per-thread state: set when the thread began, deaf to later changes
            torch.set_num_threads(threads)
        return self.plan(*args)

    def _start_chunk(self, plan: Plan, offset: int) -> None:
        self.last_plan = plan
        self.queue = list(plan.chunk[offset : offset + self.execute_steps])
        self.step_in_plan = offset

    def imagined_frame(self) -> np.ndarray | None:
        """The world model's imagined frame for the state the last action led to (for videos), or None."""
        if self.last_plan is None:
            return None
        return self.last_plan.imagined[min(self.step_in_plan, len(self.last_plan.imagined) - 1)]
