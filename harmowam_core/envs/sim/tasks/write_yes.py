"""Write "Yes" (appendix B): take a marker out of its holder and write "Y", "e", "s" on a whiteboard.

The whiteboard lies flat on the table; text runs across it from the robot's left to its right (-y), letters
upright away from the robot (+x). Wherever the marker's tip touches the board the station records a trace
point and leaves a dot of ink, so the cameras see the word appear. Each stage scores the trace inside one
letter's slot against that letter's template: it passes when most of the template is covered and most of
the trace lies on the template (both within `TOLERANCE`).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from harmowam_core.envs.sim.objects import Part, build_object, cup_parts
from harmowam_core.envs.sim.scene import TABLE_TOP
from harmowam_core.envs.sim.tasks.base import (
    ArmTarget,
    Placement,
    SimTask,
    TransitTarget,
    Waypoint,
    down,
    sample_points,
)

BOARD = (0.06, 0.11, 0.003)  # half sizes: x (letter height direction), y (text direction), thickness
LETTER_W, LETTER_H, PITCH = 0.032, 0.048, 0.048  # letter box and the distance between letter slots
TOLERANCE = 0.004  # a template point is covered / a trace point is on the letter within this distance (m)
COVERAGE = 0.9  # of the template covered, and of the trace on the template
NUM_INK = 300
INK_STEP = 0.0015  # a new trace point / ink dot once the tip has moved this far from the last
INK_GAP = 0.0015  # the felt tip marks the board within this distance of its surface
HOLDER_INNER, HOLDER_H = 0.016, 0.04
MARKERS = {  # radius, half length (body), body colour, cap colour
    "marker": (0.009, 0.06, (0.95, 0.95, 0.95, 1.0), (0.1, 0.2, 0.8, 1.0)),
    "thick_marker": (0.0135, 0.052, (0.15, 0.15, 0.15, 1.0), (0.9, 0.2, 0.1, 1.0)),
}
TIP_HALF = 0.006


def _arc(cx, cy, rx, ry, a0, a1, n=14):
    a = np.linspace(np.deg2rad(a0), np.deg2rad(a1), n)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


def letter_strokes(letter: str) -> list[np.ndarray]:
    """Pen-down polylines of a letter in its box: u along the text (0..LETTER_W), v up (0..LETTER_H)."""
    w, h = LETTER_W, LETTER_H
    if letter == "Y":
        return [np.array([[0.0, h], [w / 2, h / 2], [w, h]]), np.array([[w / 2, h / 2], [w / 2, 0.0]])]
    if letter == "e":  # lowercase: a bar, then round anticlockwise from its right end and open at the bottom right
        r = 0.34 * h
        bar = np.array([[w / 2 - 0.45 * w, r], [w / 2 + 0.45 * w, r]])
        return [np.concatenate([bar, _arc(w / 2, r, 0.45 * w, r, 0, 315)[1:]])]
    if letter == "s":  # lowercase: the upper bowl anticlockwise, the lower bowl clockwise
        q = 0.17 * h
        upper = _arc(w / 2, 3 * q, 0.42 * w, q, 20, 270)
        lower = _arc(w / 2, q, 0.42 * w, q, 90, -160)
        return [np.concatenate([upper, lower[1:]])]
    raise ValueError(letter)


def densify(strokes: list[np.ndarray], spacing: float = 0.002) -> np.ndarray:
    """Points every `spacing` metres along polylines."""
    out = []
    for s in strokes:
        for a, b in zip(s[:-1], s[1:], strict=True):
            n = max(2, int(np.ceil(np.linalg.norm(b - a) / spacing)) + 1)
            out.append(a + np.linspace(0.0, 1.0, n)[:, None] * (b - a))
    return np.concatenate(out)


@cache
def _template(letter: str) -> np.ndarray:
    return densify(letter_strokes(letter))


def score_letter(trace: np.ndarray, letter: str) -> tuple[float, float]:
    """(coverage, precision) of trace points (letter-box coordinates) against the letter's template."""
    template = _template(letter)  # scored every step: built once per letter
    if len(trace) == 0:
        return 0.0, 0.0
    d = np.linalg.norm(template[:, None] - trace[None], axis=-1)
    return float(np.mean(d.min(axis=1) < TOLERANCE)), float(np.mean(d.min(axis=0) < TOLERANCE))


class WriteYes(SimTask):
    name = "write_yes"
    num_arms = 1
    base_objects = {"marker": ["marker", "thick_marker"]}
    region_objects = ("board",)
    letters = ("Y", "e", "s")

    def build(self, variant):
        self.kind = variant["marker"]
        r, half, body, cap = MARKERS[self.kind]
        marker = [
            Part("cylinder", (r, half), rgba=body, name="body"),
            Part("cylinder", (r * 1.05, 0.018), (0.0, 0.0, half - 0.018), cap, name="cap"),
            Part("cylinder", (0.004, TIP_HALF), (0.0, 0.0, -half - TIP_HALF), cap, name="tip"),
        ]
        board = [
            Part("box", BOARD, rgba=(0.97, 0.97, 0.97, 1.0), name="surface"),
            Part("box", (BOARD[0] + 0.006, 0.006, BOARD[2] + 0.001), (0, BOARD[1] + 0.006, 0), (0.5, 0.5, 0.55, 1)),
            Part("box", (BOARD[0] + 0.006, 0.006, BOARD[2] + 0.001), (0, -BOARD[1] - 0.006, 0), (0.5, 0.5, 0.55, 1)),
        ]
        ink = [Part("cylinder", (0.0016, 0.0003), (0.0, 0.0, 0.0), (0.1, 0.2, 0.8, 1.0)) for _ in range(NUM_INK)]
        return {
            "marker": build_object("marker", marker, density=500.0, condim=4),
            "holder": build_object("holder", cup_parts(HOLDER_INNER, HOLDER_H, 0.004, (0.3, 0.3, 0.3, 1)), free=False),
            "board": build_object("board", board, free=False),
            "ink": build_object("ink", ink, free=False),
        }

    def place(self, rng, region):
        b = sample_points(rng, region, 1, 0.0)[0]
        yaw = rng.uniform(-0.12, 0.12)
        holder = b + np.array([rng.uniform(-0.04, 0.04), rng.uniform(0.19, 0.23)])
        r, half, _, _ = MARKERS[self.kind]
        floor = -HOLDER_H / 2 + 0.004
        return {
            "board": Placement(b[0], b[1], BOARD[2], yaw),
            "holder": Placement(holder[0], holder[1], HOLDER_H / 2, 0.0),
            "marker": Placement(holder[0], holder[1], HOLDER_H / 2 + floor + 2 * TIP_HALF + half + 0.001, 0.0),
            "ink": Placement(b[0], b[1], -0.05, 0.0),  # dots hidden under the table until drawn
        }

    def footprint(self, placements):
        b, h = placements["board"], placements["holder"]
        corners = [np.array([b.x + dx, b.y + dy]) for dx in (-BOARD[0], BOARD[0]) for dy in (-BOARD[1], BOARD[1])]
        return [np.array([b.x, b.y]), np.array([h.x, h.y]), *corners]

    # --- board frame: origin at the first letter slot's lower left corner, u along the text, v up
    def _board_frame(self, view):
        m = view.mat("board")
        u, v = -m[:, 1], m[:, 0]
        top = view.pos("board") + m[:, 2] * BOARD[2]
        origin = top - u * (len(self.letters) * PITCH / 2) - v * LETTER_H / 2
        return origin, u, v

    def to_board(self, view, world: np.ndarray) -> np.ndarray:
        origin, u, v = self._board_frame(view)
        d = world - origin
        return np.array([d @ u, d @ v])

    def to_world(self, view, uv: np.ndarray, lift: float = 0.0) -> np.ndarray:
        origin, u, v = self._board_frame(view)
        return origin + uv[0] * u + uv[1] * v + np.array([0.0, 0.0, lift])

    def slot(self, k: int) -> float:
        return k * PITCH + (PITCH - LETTER_W) / 2

    def on_reset(self, view):
        model = view.sim.model
        # the felt tip glides on the board: low friction on both (MuJoCo takes the larger of a pair's values)
        slick = [model.geom_name2id(view.obj("marker").naming_prefix + "tip"), *view.geom_ids("board")]
        model.geom_friction[slick] = [0.05, 0.005, 0.0001]
        ink_body = view.env.object_body_ids["ink"]
        self._ink = np.flatnonzero(model.geom_bodyid == ink_body)
        model.geom_contype[self._ink] = 0
        model.geom_conaffinity[self._ink] = 0
        self._ink_home = model.body_pos[ink_body].copy()
        model.geom_pos[self._ink] = 0.0
        self.trace: list[np.ndarray] = []
        self._inked = 0

    def tip(self, view) -> np.ndarray:
        half = MARKERS[self.kind][1]
        return view.world_point("marker", (0.0, 0.0, -half - 2 * TIP_HALF))

    def on_step(self, view):
        tip = self.tip(view)
        m = view.mat("board")
        rel = m.T @ (tip - view.pos("board"))
        if abs(rel[0]) > BOARD[0] or abs(rel[1]) > BOARD[1] or rel[2] - BOARD[2] > INK_GAP:
            return
        uv = self.to_board(view, tip)
        if self.trace and np.linalg.norm(uv - self.trace[-1]) < INK_STEP:
            return
        self.trace.append(uv)
        if self._inked < NUM_INK:  # a dot of ink on the board (a composite object's geoms come in
            world = self.to_world(view, uv, lift=0.0004) + TABLE_TOP  # collision/visual pairs)
            view.sim.model.geom_pos[self._ink[2 * self._inked : 2 * self._inked + 2]] = world - self._ink_home
            self._inked += 1

    def letter_trace(self, k: int) -> np.ndarray:
        if not self.trace:
            return np.zeros((0, 2))
        pts = np.array(self.trace)
        x0 = self.slot(k)
        inside = (pts[:, 0] > x0 - (PITCH - LETTER_W) / 2) & (pts[:, 0] < x0 + LETTER_W + (PITCH - LETTER_W) / 2)
        return pts[inside] - np.array([x0, 0.0])

    def predicates(self, view):
        out = []
        for k, letter in enumerate(self.letters):
            coverage, precision = score_letter(self.letter_trace(k), letter)
            out.append(coverage >= COVERAGE and precision >= COVERAGE)
        return out

    def transit_target(self, view):
        m = view.pos("marker")  # picked out of its holder first
        return TransitTarget(0, "marker", m[:2].copy(), float(m[2] + MARKERS[self.kind][1]))

    def plan(self, view, rng):
        r, half, _, _ = MARKERS[self.kind]
        m = view.pos("marker")
        top = m[2] + half
        grip_z = top - rng.uniform(0.02, 0.026)
        carry = top + 0.08
        yield Waypoint([ArmTarget(np.r_[m[:2], carry], down(), 0.0)], speed=rng.uniform(0.04, 0.05), tol=0.008)
        yield Waypoint([ArmTarget(np.r_[m[:2], grip_z], down(), 0.0)], speed=0.02, tol=0.003, hold=2)
        yield Waypoint([ArmTarget(np.r_[m[:2], grip_z], down(), 1.0)], speed=0.01, hold=8, timeout=12)
        yield Waypoint([ArmTarget(np.r_[m[:2], carry + 0.04], down(), 1.0)], speed=0.03, tol=0.01)
        # the tip's offset from the hand, read once the marker is held
        offset = self.tip(view) - view.eef_pos(0)
        press = -0.003 + rng.uniform(-0.0005, 0.0005)
        hover = 0.015
        for k, letter in enumerate(self.letters):
            for stroke in letter_strokes(letter):
                pts = densify([stroke], spacing=0.005)
                first = self.to_world(view, pts[0] + [self.slot(k), 0.0]) - offset
                yield Waypoint([ArmTarget(first + [0, 0, hover + 0.02], down(), 1.0)], speed=0.03, tol=0.006)
                yield Waypoint([ArmTarget(first + [0, 0, press], down(), 1.0)], speed=0.012, tol=0.003, hold=1)
                for p in pts[1:]:
                    target = self.to_world(view, p + [self.slot(k), 0.0]) - offset + [0, 0, press]
                    yield Waypoint([ArmTarget(target, down(), 1.0)], speed=0.012, tol=0.003, timeout=15)
                last = self.to_world(view, pts[-1] + [self.slot(k), 0.0]) - offset
                yield Waypoint([ArmTarget(last + [0, 0, hover], down(), 1.0)], speed=0.015, tol=0.005)
