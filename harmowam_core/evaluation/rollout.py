"""Closed-loop episodes on a station, with an mp4 of what the policy saw and imagined.

    with make_env(recipe) as env, HarmoWAMPolicy.from_bundle(bundle) as policy:
        result = run_episode(env, PolicyActor(policy), seed=1000, ood="position", max_steps=400,
                             video=Path("ep000.mp4"), fps=20)
    result.stages          # [True, False]: the stages reached, in order
    result.expert_steps    # {"predictive": 131, "reactive": 204}: which expert's actions were executed

An episode ends when every stage has succeeded (stage success is latched by the station) or after
`max_steps`, or when the operator ends it (a real station's `operator_ended`); a real station's
`end_episode` then stops the arms and has the operator score the stages. The video shows, per executed
step, the real world-model camera beside the world model's imagined frame for that step, over a banner with
the step, the expert in charge (colour-coded) and p(interaction). A KeyboardInterrupt (Ctrl-C) ends the
episode early and stops a real station's arms: the video is closed properly and the result comes back
marked `interrupted`, for the caller to stop its loop. Any other exception stops the arms and goes on.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from harmowam_core.envs.base import Observation
from harmowam_core.evaluation.trace import EpisodeTrace, first_target
from harmowam_core.evaluation.video import EpisodeVideo


class PolicyActor:
    """A HarmoWAMPolicy as an episode's actor."""

    def __init__(self, policy):
        self.policy = policy
        self.name = policy.router

    def reset(self, env) -> None:
        self.policy.reset()

    def act(self, obs: Observation) -> np.ndarray:
        return self.policy.act(obs)

    def observe(self, obs: Observation) -> None:
        """An observation another actor acted on (see `HarmoWAMPolicy.observe`)."""
        self.policy.observe(obs)

    def needs_images(self) -> bool:
        return self.policy.needs_images()

    def status(self) -> tuple[str, float | None]:
        plan = self.policy.last_plan
        return plan.used, plan.p_interaction

    def imagined(self) -> np.ndarray | None:
        return self.policy.imagined_frame()


class ScriptedActor:
    """The simulator's privileged scripted expert (the upper-bound row of an evaluation)."""

    name = "scripted"

    def reset(self, env) -> None:
        self.pilot = env.expert()

    def act(self, obs: Observation) -> np.ndarray:
        return self.pilot.act()

    def needs_images(self) -> bool:
        return False  # privileged state only

    def status(self) -> tuple[str, float | None]:
        return "scripted", None

    def imagined(self) -> np.ndarray | None:
        return None


@dataclass
class EpisodeResult:
    actor: str  # the router, or "scripted"
    protocol: str  # the OOD protocol: none | background | position | objects
    episode: int
    seed: int
    stages: list[bool]
    steps: int
    seconds: float
    expert_steps: dict[str, int] = field(default_factory=dict)
    video: str | None = None
    trace: str | None = None  # the episode's per-step parquet (`evaluation.trace`), where one was written
    interrupted: bool = False
    action_digest: str = ""  # SHA-1 of the executed actions (float32): equal digests, the same episode
    scene_digest: str = ""  # SHA-1 of the first observation (state and camera images): equal digests, the same
    # scene (every actor of an evaluation sees the same scenes: episode i of a protocol is seed + i)
    # the gripper reached the first target object's vicinity (transit, paper appendix D.2; `phase_split`);
    # None where it is not measured (the real station, a task that does not define its first target)
    transit: bool | None = None

    @property
    def success(self) -> bool:
        return bool(self.stages) and all(self.stages)

    def to_dict(self) -> dict:
        return asdict(self)


def observation_digest(obs: Observation) -> str:
    """SHA-1 of an observation's state (float32) and camera images (uint8, cameras in name order)."""
    digest = hashlib.sha1(np.asarray(obs.state, dtype=np.float32).tobytes())
    for name in sorted(obs.images):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(obs.images[name], dtype=np.uint8).tobytes())
    return digest.hexdigest()


def run_episode(
    env,
    actor,
    *,
    seed: int,
    ood: str = "none",
    max_steps: int,
    episode: int = 0,
    video: Path | None = None,
    fps: int = 20,
    camera: str = "front",
    on_step: Callable[[int, str], None] | None = None,
    stages: int | None = None,
    trace: Path | None = None,
) -> EpisodeResult:
    """Run one episode of `actor` (PolicyActor or ScriptedActor) on `env` from the scene of `seed`;
    `on_step(steps_done, expert_in_charge)` is called after every step. With `stages`, the episode ends once
    its first `stages` stages have succeeded (default: all of them). With `trace`, every step is also written
    to that parquet file (`evaluation.trace`), with how the episode ended (an interrupted or failed one too)."""
    start = time.perf_counter()
    result = EpisodeResult(actor.name, ood, episode, seed, [], 0, 0.0, video=str(video) if video else None)
    result.trace = str(trace) if trace is not None else None
    obs = env.reset(seed=seed, ood=ood)
    result.scene_digest = observation_digest(obs)
    actor.reset(env)
    writer = EpisodeVideo(Path(video), fps, camera) if video is not None else None
    steps = EpisodeTrace(Path(trace)) if trace is not None else None
    digest = hashlib.sha1()
    ended = "failed"  # until the loop ends or is interrupted
    try:
        for step in range(max_steps):
            action = actor.act(obs)
            digest.update(np.asarray(action, dtype=np.float32).tobytes())
            used, p = actor.status()
            if steps is not None:  # the row's state and target: when the action was issued
                target = first_target(env)
                row = dict(step=step, state=obs.state, action=action, expert=used, p=p,
                           target=None if target is None else [*target.xy, target.top])  # fmt: skip
            result.expert_steps[used] = result.expert_steps.get(used, 0) + 1
            # a video shows every frame; otherwise only the frames the actor will read are rendered
            obs = env.step(action, images=writer is not None or actor.needs_images())
            if obs.info.get("recovered"):  # a real arm recovered from a reflex: what was planned before is stale
                actor.reset(env)
            result.steps = step + 1
            reached = env.stage_success()
            if steps is not None:
                steps.add(**row, stages=reached)
            if writer is not None:
                writer.add(obs, actor.imagined(), step + 1, used, p, reached)
            if on_step is not None:
                on_step(step + 1, used)
            if all(reached[:stages] if stages is not None else reached) or env.operator_ended:
                break
        ended = "finished"
    except KeyboardInterrupt:
        result.interrupted, ended = True, "interrupted"
        env.stop()  # at once, before the video and the trace are written
    except BaseException:
        env.stop()
        raise
    finally:
        if steps is not None:
            try:
                steps.close(ended, result.steps)
            except Exception:
                if ended != "failed":  # else the episode's own error is the one to see
                    raise
        if writer is not None:
            writer.close()
    if result.interrupted:
        result.stages = [bool(s) for s in env.stage_success()]
    else:  # the real station stops, and its operator scores the stages
        result.stages = [bool(s) for s in env.end_episode()]
    result.action_digest = digest.hexdigest()
    result.seconds = time.perf_counter() - start
    return result
