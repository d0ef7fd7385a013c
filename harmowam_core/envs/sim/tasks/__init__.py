"""The six simulated tasks of the paper (appendix B), by recipe name."""

from __future__ import annotations

from harmowam_core.config import Recipe
from harmowam_core.envs.sim.tasks.base import SimTask
from harmowam_core.errors import HarmoWAMError


def _registry() -> dict[str, type[SimTask]]:
    from harmowam_core.envs.sim.tasks.bag_zip import BagZip
    from harmowam_core.envs.sim.tasks.flowers import Flowers
    from harmowam_core.envs.sim.tasks.pick_fruit import PickFruit
    from harmowam_core.envs.sim.tasks.pour_coke import PourCoke
    from harmowam_core.envs.sim.tasks.stack_cans import StackCans
    from harmowam_core.envs.sim.tasks.write_yes import WriteYes

    return {cls.name: cls for cls in (PickFruit, StackCans, PourCoke, WriteYes, Flowers, BagZip)}


def sim_task_names() -> list[str]:
    return list(_registry())


def task_for(recipe: Recipe) -> SimTask:
    tasks = _registry()
    if recipe.name not in tasks:
        raise HarmoWAMError(
            f"{recipe.source}: no simulated task '{recipe.name}' (the simulator has: {', '.join(tasks)})"
        )
    cls = tasks[recipe.name]
    if (cls.num_arms == 1) != (recipe.arms == "single"):
        raise HarmoWAMError(f"{recipe.source}: arms: the simulated {recipe.name} is {cls.num_arms}-armed")
    return cls(recipe)
