"""How a control cycle turns the two experts' chunks into the one it executes (paper section 3.4, Fig. 5).

    chunk, used = route("gate", p_interaction=0.8, predictive=a_pred, reactive=a_react, threshold=0.5)

- `gate` (the paper): the predictive expert when p(interaction) >= threshold, else the reactive one.
- `predictive`, `reactive`: always that expert (the single-expert rows of the ablations).
- `average`: the mean of both chunks at every step.
- `keyframe-average`: the mean during interaction (where the gate would pick the predictive expert), the
  reactive expert in transit.

`used` names what was executed: "predictive", "reactive" or "average".
"""

from __future__ import annotations

import numpy as np

ROUTERS = ("gate", "predictive", "reactive", "average", "keyframe-average")


def route(
    router: str, p_interaction: float, predictive: np.ndarray, reactive: np.ndarray, threshold: float
) -> tuple[np.ndarray, str]:
    if router not in ROUTERS:
        raise ValueError(f"unknown router '{router}'; choose from {', '.join(ROUTERS)}")
    interaction = p_interaction >= threshold
    if router == "predictive" or (router == "gate" and interaction):
        return predictive, "predictive"
    if router == "reactive" or (router in ("gate", "keyframe-average") and not interaction):
        return reactive, "reactive"
    return (np.asarray(predictive) + np.asarray(reactive)) / 2.0, "average"
