"""Configuration: the task recipes (`recipe`: the schema; `loader`: find, parse, override, dump) and the one
validator both recipes and the real station's configuration use (`validation`).

    recipe = load_recipe("stack_cans", overrides=["train_wm.steps=200"])
"""

from harmowam_core.config.loader import (
    apply_overrides,
    builtin_recipe_dir,
    dump_recipe,
    load_recipe,
    recipe_from_data,
    recipe_from_text,
    recipe_names,
    sections_from_overrides,
)
from harmowam_core.config.recipe import GateSpec, ModelSpec, Recipe, Region, TrainSpec, resolve_model
from harmowam_core.config.validation import Invalid, located

__all__ = [
    "GateSpec",
    "Invalid",
    "ModelSpec",
    "Recipe",
    "Region",
    "TrainSpec",
    "apply_overrides",
    "builtin_recipe_dir",
    "dump_recipe",
    "load_recipe",
    "located",
    "recipe_from_data",
    "recipe_from_text",
    "recipe_names",
    "resolve_model",
    "sections_from_overrides",
]
