"""How a control cycle turns the two experts' chunks into the one it executes (paper section 3.4, Fig. 5): one
table, name -> router. A new router is one entry here; the commands, the plots and the reports read the table.

    chunk, used = route("gate", p_interaction=0.8, predictive=a_pred, reactive=a_react, threshold=0.5)

- `gate` (the paper): the predictive expert when p(interaction) >= threshold, else the reactive one.
- `predictive`, `reactive`: always that expert (the single-expert rows of the ablations).
- `average`: the mean of both chunks at every step.
- `keyframe-average`: the mean during interaction (where the gate would pick the predictive expert), the
  reactive expert in transit.

`used` names what was executed: "predictive", "reactive" or "average".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harmowam_core.errors import ParameterError

Choice = Callable[[bool, np.ndarray, np.ndarray], tuple[np.ndarray, str]]  # (interaction, pred, react) -> chunk, used


def _predictive(interaction: bool, predictive: np.ndarray, reactive: np.ndarray) -> tuple[np.ndarray, str]:
    return predictive, "predictive"


def _reactive(interaction: bool, predictive: np.ndarray, reactive: np.ndarray) -> tuple[np.ndarray, str]:
    return reactive, "reactive"


def _average(interaction: bool, predictive: np.ndarray, reactive: np.ndarray) -> tuple[np.ndarray, str]:
    return (np.asarray(predictive) + np.asarray(reactive)) / 2.0, "average"


@dataclass(frozen=True)
class Router:
    name: str
    summary: str  # one line for --help and reports
    choose: Choice  # the chunk for the gate's decision (interaction: p(interaction) >= threshold)
    colour: tuple[int, int, int]  # RGB in plots and videos


ROUTER_TABLE: dict[str, Router] = {
    r.name: r
    for r in (
        Router(
            "gate",
            "the paper: predictive in interaction, reactive in transit",
            lambda i, p, r: _predictive(i, p, r) if i else _reactive(i, p, r),
            (39, 174, 96),
        ),
        Router("predictive", "the predictive expert only", _predictive, (230, 126, 34)),
        Router("reactive", "the reactive expert only", _reactive, (52, 152, 219)),
        Router("average", "the mean of both chunks", _average, (142, 68, 173)),
        Router(
            "keyframe-average",
            "the mean in interaction, reactive in transit",
            lambda i, p, r: _average(i, p, r) if i else _reactive(i, p, r),
            (22, 160, 133),
        ),
    )
}
ROUTERS = tuple(ROUTER_TABLE)


def check_router(name: str) -> str:
    """`name` if it is a router; else ParameterError naming the choices."""
    if name not in ROUTER_TABLE:
        raise ParameterError("router", f"unknown router '{name}'; choose from {', '.join(ROUTERS)}")
    return name


def route(
    router: str, p_interaction: float, predictive: np.ndarray, reactive: np.ndarray, threshold: float
) -> tuple[np.ndarray, str]:
    """The executed chunk and which expert it came from ("predictive", "reactive" or "average")."""
    return ROUTER_TABLE[check_router(router)].choose(p_interaction >= threshold, predictive, reactive)
