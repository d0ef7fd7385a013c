"""The one validator of the project's YAML files (recipes and the real station configuration): pydantic v2 with
strict scalars, reusable constrained types and rules, and `validate`, which turns pydantic's first error into
one located line (`RecipeError`: the file, the dotted key, what was expected)."""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AllowInfNan, BeforeValidator, ConfigDict, Strict, TypeAdapter, ValidationError

from harmowam_core.errors import RecipeError

# Containers are validated in pydantic's lax mode (a section is a YAML mapping, not an instance), every scalar
# strictly through these types; unknown keys are errors.
SCHEMA = ConfigDict(extra="forbid")
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _exponent(value: Any) -> Any:
    """PyYAML reads 1e-3 (no dot) as a string; everyone writes it."""
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


Int = Annotated[int, Strict()]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]
Number = Annotated[float, BeforeValidator(_exponent), Strict(), AllowInfNan(False)]  # an integer is a number too;
# .nan and .inf are not (no setting of a recipe means them)


class Invalid(ValueError):
    """Raised by a validator: `expected` for the value `got` at `key` (dotted, relative to the validated object;
    None: the object itself). Pydantic wraps it in its ValidationError; `located` unwraps it."""

    def __init__(self, expected: str, got: Any = None, key: str | None = None, *, show_got: bool = True):
        super().__init__(expected)
        self.expected, self.got, self.key, self.show_got = expected, got, key, show_got


def rule(ok: Callable[[Any], bool], expected: str) -> AfterValidator:
    """A field validator: the value passes when `ok(value)`, else `expected` is the error."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise Invalid(expected, value)
        return value

    return AfterValidator(check)


def pair(lo: float | None = None, strict: bool = True) -> AfterValidator:
    """A [low, high] range: two values, low < high (`strict`, else <=), low >= `lo`."""

    def check(pair: list) -> list:
        if len(pair) != 2:
            raise Invalid("expected a [low, high] pair", pair)
        if not (pair[0] < pair[1] if strict else pair[0] <= pair[1]):
            raise Invalid("expected low < high" if strict else "expected low <= high", pair)
        if lo is not None and not pair[0] >= lo:
            raise Invalid(f"expected values >= {lo}", pair)
        return pair

    return AfterValidator(check)


def identifier(expected: str) -> AfterValidator:
    return rule(lambda v: v.replace("_", "").isalnum(), expected)


PositiveInt = Annotated[Int, rule(lambda v: v > 0, "expected a positive integer")]
NonNegativeInt = Annotated[Int, rule(lambda v: v >= 0, "expected an integer >= 0")]
PositiveNumber = Annotated[Number, rule(lambda v: v > 0, "expected a positive number")]
NonNegativeNumber = Annotated[Number, rule(lambda v: v >= 0, "expected a number >= 0")]
Seed = Annotated[Int, rule(lambda v: 0 <= v <= 2**32 - 1, "expected a seed in 0..4294967295")]
Every = Annotated[Int, rule(lambda v: v >= 0, "expected 0 (off) or a number of steps")]
Pixels = Annotated[Int, rule(lambda v: 16 <= v <= 4096 and v % 2 == 0, "expected an even pixel count in 16..4096")]
Probability = Annotated[Number, rule(lambda v: 0.0 < v < 1.0, "expected a probability in (0, 1)")]
Decay = Annotated[Number, rule(lambda v: 0.0 <= v < 1.0, "expected 0 (off) or a decay in (0, 1)")]
FeatureKey = Annotated[Str, rule(lambda v: bool(v.strip()), "expected a feature key such as observation.images.x")]
Channels = Annotated[list[Int], rule(lambda v: all(c >= 0 for c in v), "expected channel indices >= 0")]
Minutes = Annotated[Number, rule(lambda v: v > 0, "expected null (no cap) or a positive number of minutes")]


# --------------------------------------------------------------------------------------------- errors
def located(err: ValidationError, schema: Any) -> tuple[str, str, Any, bool]:
    """Pydantic's first error as (dotted key, what was expected, the value given, whether to show it), worded
    from `schema`, the type that was validated."""
    first = err.errors(include_url=False)[0]
    loc = [p for p in first["loc"] if p != "[key]"]
    invalid = (first.get("ctx") or {}).get("error")
    if isinstance(invalid, Invalid):
        key = ".".join(str(p) for p in [*loc, *([invalid.key] if invalid.key else [])])
        return key, invalid.expected, invalid.got, invalid.show_got
    key = ".".join(str(p) for p in loc)
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument", "invalid_key"):
        parent = _strip(_annotation_at(schema, first["loc"][:-1]))
        names = [f.name for f in dataclasses.fields(parent) if f.init] if dataclasses.is_dataclass(parent) else []
        return key, "unknown key" + ("; expected one of " + ", ".join(names) if names else ""), None, False
    tp = _annotation_at(schema, first["loc"])
    described = _describe(tp) if tp is not None else first["msg"].lower()
    if first["type"] in ("missing", "missing_argument"):
        return key, "missing; expected " + described, None, False
    if first["type"] == "finite_number":
        described = "a finite number"
    return key, "expected " + described, first.get("input"), True


def _strip(tp: Any) -> Any:
    """`tp` without its `Annotated` metadata."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _annotation_at(tp: Any, loc: tuple) -> Any:
    """The schema type at pydantic's error location `loc` inside `tp` (None where it cannot tell)."""
    loc = tuple(loc)
    i = 0
    while i < len(loc):
        tp = _strip(tp)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):  # X | None: descend into X
            tp = next(a for a in args if a is not type(None))
            continue
        part = loc[i]
        if dataclasses.is_dataclass(tp):
            tp = typing.get_type_hints(tp, include_extras=True).get(str(part))
        elif origin is list:
            tp = args[0]
        elif origin is dict:
            key_error = i + 1 < len(loc) and loc[i + 1] == "[key]"
            tp = args[0] if key_error else args[1]
            i += key_error
        else:
            return None
        if tp is None:
            return None
        i += 1
    return tp


def _describe(tp: Any) -> str:
    tp = _strip(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return f"a mapping of {_describe(args[0])} to {_describe(args[1])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp) if f.init)
    if tp is Any:
        return "any value"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


@functools.cache
def adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp)


def validate(tp: Any, data: Any, source: str, key: str = "") -> Any:
    """`data` (plain YAML data) as a `tp`, or RecipeError naming `source` and the dotted key under `key`."""
    try:
        return adapter(tp).validate_python(data)
    except ValidationError as err:
        sub, expected, got, show = located(err, tp)
        where = ".".join(p for p in (key, sub) if p) or None
        raise RecipeError(source, where, expected, got, show_got=show) from None
