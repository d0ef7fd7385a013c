"""Router logic: the gate's threshold, plain and keyframe averaging, the single-expert routers."""

from __future__ import annotations

import numpy as np
import pytest

from harmowam_core.policy.routers import ROUTERS, route

PRED = np.full((12, 7), 2.0)
REACT = np.zeros((12, 7))


@pytest.mark.parametrize(
    ("router", "p", "expected", "used"),
    [
        ("gate", 0.5, PRED, "predictive"),  # at the threshold: interaction
        ("gate", 0.49, REACT, "reactive"),
        ("predictive", 0.0, PRED, "predictive"),
        ("reactive", 1.0, REACT, "reactive"),
        ("average", 0.0, np.ones((12, 7)), "average"),
        ("average", 1.0, np.ones((12, 7)), "average"),
        ("keyframe-average", 0.9, np.ones((12, 7)), "average"),
        ("keyframe-average", 0.1, REACT, "reactive"),
    ],
)
def test_routes(router, p, expected, used):
    chunk, name = route(router, p, PRED, REACT, threshold=0.5)
    np.testing.assert_array_equal(chunk, expected)
    assert name == used


def test_the_threshold_moves_the_switch_and_unknown_routers_fail():
    assert route("gate", 0.6, PRED, REACT, threshold=0.7)[1] == "reactive"
    assert route("gate", 0.6, PRED, REACT, threshold=0.3)[1] == "predictive"
    with pytest.raises(ValueError, match="keyframe-average"):
        route("vote", 0.5, PRED, REACT, threshold=0.5)
    assert len(ROUTERS) == 5
