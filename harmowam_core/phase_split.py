"""The transit / interaction split of the paper's Table 1, in the simulator, measured as appendix D.2 does.

Appendix D.2: *transit* "measures the ability to reach the target vicinity from the initial position or move
between objects, reflecting generalization"; *interaction* "measures the success of core actions such as
picking, placing, stacking, handover, or insertion, reflecting precision", and is evaluated "by initializing
the robot near the target object", which "decouples interaction precision from transit failures". Here both
are measured on an episode's first target, the object the scripted expert goes for first
(`SimTask.transit_target`: the can picked first, the bottle's handle, the banana, the marker, the flower's
stem, the item for the bag):

- transit success: in an ordinary closed-loop episode (every `harmowam eval` episode records it as
  `transit`), the gripper of the target's arm enters the target's vicinity within the episode's step limit.
  The vicinity (appendix D.2's "target vicinity", which the paper does not size) is the region within
  VICINITY (3 cm) of the target horizontally and between the target's top and VICINITY above it: the
  pre-grasp region a gripper coming down onto the object passes through. It has a lower bound, so a gripper
  that sweeps past below the target's top (at table height, knocking the object) is not in it;
- interaction success: the scripted expert drives the approach until its gripper first enters that vicinity,
  still open (its pre-grasp pose), then hands over to the expert under test (`HandoverSession`); the episode
  succeeds when the first stage succeeds within the step limit (counted from the episode's start). Episodes
  whose scripted approach never reached the vicinity count as failures, and are reported. What the first
  stage asks of the expert after the handover differs per task (`INTERACTION_COVERS`): for stack_cans it is
  grasping the can and carrying it over to stand beside the first one, not the grasp alone.

    interaction = evaluate_interaction(bundle, ["none", "position"], ["predictive", "reactive"], 20, 1000, out)
    rows = split_rows(eval_report, interaction)   # per (expert, protocol): transit k/n, interaction k/n

The predictive expert is the paper's joint-modeling paradigm, the reactive expert its imagine-then-execute one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harmowam_core.errors import HarmoWAMError
from harmowam_core.evaluation.report import EvalReport
from harmowam_core.evaluation.rollout import EpisodeResult, ScriptedActor, run_episode
from harmowam_core.evaluation.runner import EvalSession, evaluate
from harmowam_core.evaluation.trace import first_target
from harmowam_core.workers import deterministic_cpu

VICINITY = 0.03  # m: horizontally from the target; and the height band above its top (appendix D.2's vicinity)
HANDOVER_SESSION = "harmowam_core.phase_split:HandoverSession"
SPLIT_EXPERTS = ("predictive", "reactive")  # joint modeling, imagine-then-execute
INTERACTION_COVERS = {  # what stage 1 asks of the expert once it takes over at the pre-grasp pose, per task
    "stack_cans": "grasp the second can, carry it over to the first one and stand it beside it",
    "pour_coke": "grasp the bottle by its handle and lift it off the table",
    "pick_fruit": "grasp the banana, carry it to the plate and set it down there",
    "write_yes": "grasp the marker, lift it out of its holder, carry it to the board and write the Y",
    "flowers": "grasp the flower across its stem with the left arm and lift it off its stand",
    "bag_zip": "grasp the item with the left arm and lift it",
}


def supports_split(recipe) -> bool:
    """Whether the recipe's simulated task defines its first transit target (every shipped task does)."""
    from harmowam_core.envs.sim.tasks import task_for
    from harmowam_core.envs.sim.tasks.base import SimTask

    return type(task_for(recipe)).transit_target is not SimTask.transit_target


def in_vicinity(env) -> bool | None:
    """Whether the gripper of the target's arm is in the vicinity of the episode's first target now (appendix
    D.2's "target vicinity"): within VICINITY (3 cm) of the target horizontally and between the target's top
    and VICINITY above it (a gripper below the top, e.g. sweeping past at table height, is not). None where
    that is not defined (not the simulator, or a task without a transit target)."""
    target = first_target(env)
    if target is None:
        return None
    eef = env.view.eef_pos(target.arm)
    height = eef[2] - target.top
    return bool(np.linalg.norm(eef[:2] - target.xy) <= VICINITY and 0.0 <= height <= VICINITY)


class TransitProbe:
    """Watches an episode for the first transit: `update()` after every step; `reached` stays None where the
    vicinity is not defined, else says whether the gripper has been in it."""

    def __init__(self, env):
        self.env = env
        self.reached: bool | None = None

    def update(self) -> None:
        if not self.reached:
            now = in_vicinity(self.env)
            if now is not None:
                self.reached = now


class HandoverActor:
    """The scripted expert until its gripper first enters the target's vicinity, still open (its pre-grasp
    pose), then `actor` (a PolicyActor) from that observation on, having observed the scripted step before it
    (so its first plan sees the approach's motion, as in a whole episode)."""

    def __init__(self, actor):
        self.actor, self.name = actor, actor.name
        self.scripted = ScriptedActor()
        self.handover_step: int | None = None

    def reset(self, env) -> None:
        self.env, self.steps, self.handover_step, self.last_obs = env, 0, None, None
        self.scripted.reset(env)

    def _pre_grasp(self) -> bool:
        target = self.env.task.transit_target(self.env.view)
        return bool(in_vicinity(self.env)) and self.env.view.gripper_closed(target.arm) < 0.5

    def act(self, obs) -> np.ndarray:
        if self.handover_step is None and self._pre_grasp():
            self.handover_step = self.steps
            self.actor.reset(self.env)  # a fresh plan from the pre-grasp observation
            if self.last_obs is not None:
                self.actor.observe(self.last_obs)
        self.steps += 1
        self.last_obs = obs
        return (self.scripted if self.handover_step is None else self.actor).act(obs)

    def status(self) -> tuple[str, float | None]:
        return (self.scripted if self.handover_step is None else self.actor).status()

    def needs_images(self) -> bool:
        # the handover step is known only when it comes, and the policy then reads that frame and the one before
        return self.handover_step is None or self.actor.needs_images()

    def imagined(self) -> np.ndarray | None:
        return None if self.handover_step is None else self.actor.imagined()


class HandoverSession(EvalSession):
    """An evaluation worker's state for interaction episodes: each job's router takes over from the scripted
    approach (`HandoverActor`); the episode ends once the first stage has succeeded. The result's `transit`
    says whether the handover happened (the scripted approach reached the vicinity)."""

    def run(self, job: tuple, on_step: Callable[[int, str], None] | None = None) -> EpisodeResult:
        protocol, episode, actor, video, trace = job
        handover = HandoverActor(self.actors[actor])
        with deterministic_cpu():
            result = run_episode(
                self.env, handover, seed=self.seed + episode, ood=protocol, max_steps=self.steps, episode=episode,
                video=video, fps=self.recipe.fps, camera=self.camera, on_step=on_step, stages=1, trace=trace,
            )  # fmt: skip
        result.transit = handover.handover_step is not None
        return result


def evaluate_interaction(
    bundle: Path,
    protocols: list[str],
    experts: list[str],
    episodes: int,
    seed: int,
    out: Path,
    **options,
) -> EvalReport:
    """Interaction episodes (see the module docstring) of each expert (router) on the bundle's task, with
    `evaluate`'s options (max_steps, videos, workers, on_episode, on_step, ...). Simulator only."""
    from harmowam_core.policy.bundle import bundle_recipe

    if options.get("backend", "sim") != "sim":
        raise HarmoWAMError("interaction episodes hand over from the scripted expert: the simulator only")
    recipe = bundle_recipe(bundle)
    if not supports_split(recipe):
        raise HarmoWAMError(f"{recipe.name} defines no first transit target: no transit/interaction split")
    return evaluate(bundle, protocols, experts, episodes, seed, out, session=HANDOVER_SESSION, **options)


@dataclass
class SplitRow:
    """One row of Table 1: an expert under one protocol; counts of episodes."""

    actor: str
    protocol: str
    transit: int
    transit_episodes: int
    interaction: int
    interaction_episodes: int
    handed_over: int  # interaction episodes whose scripted approach reached the vicinity


def split_rows(
    transit: list[EpisodeResult], interaction: list[EpisodeResult], actors: list[str], protocols: list[str]
) -> list[SplitRow]:
    """Table 1 from closed-loop episodes (`transit` recorded) and interaction episodes (`HandoverSession`);
    pairs with neither are left out."""
    rows = []
    for actor in actors:
        for protocol in protocols:
            moved = [r for r in transit if r.actor == actor and r.protocol == protocol and r.transit is not None]
            held = [r for r in interaction if r.actor == actor and r.protocol == protocol]
            if not moved and not held:
                continue
            rows.append(
                SplitRow(
                    actor, protocol, sum(bool(r.transit) for r in moved), len(moved),
                    sum(bool(r.transit) and bool(r.stages) and r.stages[0] for r in held), len(held),
                    sum(bool(r.transit) for r in held),
                )
            )  # fmt: skip
    return rows
