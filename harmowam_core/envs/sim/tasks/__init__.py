"""The simulated tasks (the paper's six, appendix B), by recipe name: one module of this package per task."""

from __future__ import annotations

import functools
import importlib
import pkgutil

from harmowam_core.config import Recipe
from harmowam_core.envs.sim.tasks.base import SimTask
from harmowam_core.errors import HarmoWAMError


@functools.cache
def _registry() -> dict[str, type[SimTask]]:
    """Every `SimTask` subclass defined by a module of this package, by its recipe name: a new task is its
    module here and its recipe in recipes/ (nothing registers it)."""
    tasks: dict[str, type[SimTask]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, SimTask) and value.__module__ == module.__name__:
                tasks[value.name] = value
    return tasks


def sim_task_names() -> list[str]:
    return list(_registry())


def resumable_task_names() -> list[str]:
    """The tasks whose scripted expert can take over from a learned policy's state (`SimTask.resumable`)."""
    return [name for name, cls in _registry().items() if cls.resumable]


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
