"""Router logic: the gate's threshold, plain and keyframe averaging, the single-expert routers."""

from __future__ import annotations

import numpy as np
import pytest

from harmowam_core.errors import HarmoWAMError
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
    with pytest.raises(HarmoWAMError, match="keyframe-average"):
        route("vote", 0.5, PRED, REACT, threshold=0.5)
    assert len(ROUTERS) == 5


def test_one_table_names_every_router_and_ood_protocol_for_checks_plots_and_reports():
    from harmowam_core.envs.ood import OOD_KINDS, check_protocol
    from harmowam_core.evaluation.report import ACTOR_COLOURS, PROTOCOL_NAMES
    from harmowam_core.evaluation.runner import check_eval_args

    assert set(ROUTERS) <= set(ACTOR_COLOURS) and set(OOD_KINDS) == set(PROTOCOL_NAMES)
    assert PROTOCOL_NAMES["none"] == "in-domain" and check_protocol("position") == "position"
    with pytest.raises(HarmoWAMError, match="unknown OOD protocol 'indoors'"):
        check_protocol("indoors")
    with pytest.raises(HarmoWAMError, match="unknown router 'vote'"):
        check_eval_args(["none"], ["vote"], episodes=1, scripted=False, backend="sim")
    check_eval_args(list(OOD_KINDS), list(ROUTERS), episodes=1, scripted=True, backend="sim")
