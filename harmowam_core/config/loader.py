"""Loading task recipes: one YAML file per task describes the station, the stages, gate labelling, OOD protocols,
the model preset and the training settings of both stages.

    recipe = load_recipe("stack_cans", overrides=["train_wm.steps=200"])
    recipe.model_config.world_model.num_frames  # 13

A recipe is validated strictly by pydantic: the schema below is pydantic dataclasses (`extra="forbid"`, scalars
strict: `3` is not a string, `true` not an integer), with validators for ranges and cross-field rules. An unknown
key, a wrong type, a missing field, overlapping position regions or an unknown preset raise `RecipeError`, whose
one-line message names the file, the dotted key and what was expected.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from harmowam_core.config.recipe import DataSpec, GateSpec, Recipe
from harmowam_core.config.validation import validate
from harmowam_core.errors import RecipeError


# --------------------------------------------------------------------------------------------- overrides
def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value), value parsed as a YAML scalar or flow collection."""
    if "=" not in text:
        raise RecipeError("--set", text, "expected dotted.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise RecipeError("--set", key, "expected a dotted key such as train_wm.steps")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError("--set", where, f"expected a list index below {len(node)}")
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise RecipeError("--set", where, "cannot set a key inside a plain value")
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise RecipeError("--set", text.split("=")[0], f"expected a list index below {len(node)}")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise RecipeError("--set", text.split("=")[0], "cannot set a key inside a plain value")
    return data


# --------------------------------------------------------------------------------------------- loading
def builtin_recipe_dir() -> Path:
    """The recipes shipped with the package (the repository's `recipes/` folder)."""
    return Path(str(resources.files("harmowam_recipes")))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in builtin_recipe_dir().glob("*.yaml"))


def find_recipe(ref: str | Path) -> Path:
    """A recipe path, or a task name looked up in ./recipes and then in the shipped recipes."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise RecipeError(str(path), None, "recipe file not found")
        return path
    for folder in (Path("recipes"), builtin_recipe_dir()):
        candidate = folder / f"{ref}.yaml"
        if candidate.is_file():
            return candidate
    raise RecipeError(str(ref), None, "no such recipe file or task; known tasks: " + ", ".join(recipe_names()))


def sections_from_overrides(overrides: list[str]) -> tuple[GateSpec, DataSpec]:
    """The gate and data sections from `--set gate.KEY=...` / `--set data.KEY=...` alone, over their defaults:
    for a dataset that records no recipe (one LeRobot wrote). Raises RecipeError for any other key."""
    data = apply_overrides({}, overrides)
    for key in data:
        if key not in ("gate", "data"):
            raise RecipeError("--set", key, "without a recipe only gate.* and data.* can be set; pass --recipe")
    return validate(GateSpec, data.get("gate", {}), "--set", "gate"), validate(
        DataSpec, data.get("data", {}), "--set", "data"
    )


def recipe_from_data(data: Any, source: str = "<memory>", overrides: list[str] | None = None) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(source, None, "expected a mapping of recipe keys at the top level", type(data).__name__)
    if overrides:
        data = apply_overrides(data, overrides)
    recipe = validate(Recipe, data, source)
    recipe.source = source
    return recipe


def recipe_from_text(text: str, source: str = "<memory>", overrides: list[str] | None = None) -> Recipe:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise RecipeError(source, None, f"YAML syntax error{where}: {problem}") from None
    return recipe_from_data(data, source, overrides)


def load_recipe(ref: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = find_recipe(ref)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(str(path), None, f"cannot read the file ({err.__class__.__name__})") from None
    return recipe_from_text(text, str(path), overrides)


def dump_recipe(recipe: Recipe, resolved: bool = True) -> str:
    return yaml.safe_dump(recipe.to_dict(resolved=resolved), sort_keys=False, allow_unicode=True)
