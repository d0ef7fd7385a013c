"""Simulated objects built from MuJoCo primitives (robosuite `CompositeObject`s), and the background-OOD
distractors. Soft real objects (a banana, a flower, a bag) get rigid stand-ins of the same size and colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from robosuite.models.objects import CompositeObject
from robosuite.utils.mjcf_utils import CustomMaterial

GRIP_FRICTION = (1.5, 0.01, 0.0005)


@dataclass
class Part:
    """One primitive geom of an object; `pos` is relative to the object centre, `size` as MuJoCo takes it."""

    type: str
    size: tuple
    pos: tuple = (0.0, 0.0, 0.0)
    rgba: tuple = (0.6, 0.6, 0.6, 1.0)
    quat: tuple | None = None
    name: str | None = None
    visual: bool = False  # seen by the cameras only: no collisions, no mass


def _half_extent(part: Part) -> np.ndarray:
    s = part.size
    if part.type == "box":
        ext = np.array(s, float)
    elif part.type == "sphere":
        ext = np.full(3, s[0], float)
    elif part.type == "cylinder":
        ext = np.array([s[0], s[0], s[1]], float)
    elif part.type == "capsule":
        ext = np.array([s[0], s[0], s[0] + s[1]], float)
    else:
        raise ValueError(part.type)
    if part.quat is not None:  # rotated parts: bound by the largest extent on every axis
        ext = np.full(3, ext.max())
    return np.abs(np.array(part.pos, float)) + ext


def build_object(
    name: str,
    parts: list[Part],
    *,
    free: bool = True,
    density: float = 300.0,
    friction: tuple = GRIP_FRICTION,
    joints: list[dict] | None = None,
    material: CustomMaterial | None = None,
    condim: int = 3,
) -> CompositeObject:
    """A rigid object from primitives. `free=False` makes it static (moved through the model's body_pos).
    `condim=4` adds torsional friction, so a long object held off its centre does not pivot in the fingers."""
    total = np.max([_half_extent(p) for p in parts], axis=0)
    if joints is None:
        joints = "default" if free else None
    obj = CompositeObject(
        name=name,
        total_size=total.tolist(),
        geom_types=[p.type for p in parts],
        geom_sizes=[list(p.size) for p in parts],
        geom_locations=[list(p.pos) for p in parts],
        geom_quats=[list(p.quat) if p.quat is not None else None for p in parts],
        geom_names=[p.name or f"g{i}" for i, p in enumerate(parts)],
        geom_rgbas=[list(p.rgba) for p in parts],
        geom_frictions=[list(friction)] * len(parts),
        geom_condims=[condim] * len(parts),
        geom_materials=[material.mat_attrib["name"]] * len(parts) if material is not None else None,
        obj_types=["visual" if p.visual else "all" for p in parts],
        density=density,
        solref=(0.01, 1.0),
        solimp=(0.95, 0.99, 0.001),
        locations_relative_to_center=True,
        joints=joints,
    )
    if material is not None:
        obj.append_material(material)
    return obj


def cup_parts(
    inner_half: float, height: float, wall: float, rgba: tuple, *, round_sides: int = 4, bottom: bool = True
) -> list[Part]:
    """An open-topped container: a floor and `round_sides` wall slabs around a square or polygonal opening.
    The object's centre is the centre of its bounding box; the floor's top sits at -height/2 + wall."""
    parts = []
    if bottom:
        r = inner_half + wall
        parts.append(Part("box", (r, r, wall / 2), (0, 0, -height / 2 + wall / 2), rgba, name="floor"))
    for k in range(round_sides):
        a = 2 * np.pi * k / round_sides
        c = inner_half + wall / 2
        half_len = (inner_half + wall) * np.tan(np.pi / round_sides) if round_sides > 4 else inner_half + wall
        quat = (np.cos(a / 2), 0.0, 0.0, np.sin(a / 2))
        parts.append(
            Part("box", (wall / 2, half_len, height / 2), (c * np.cos(a), c * np.sin(a), 0.0), rgba, quat, f"wall{k}")
        )
    return parts


# ---------------------------------------------------------------------------------------- distractors
DISTRACTOR_TEXTURES = ["WoodLight", "Brass", "Ceramic", "Metal", "WoodDark", "PlasterPink", "FeltGray", "Dirt"]
DISTRACTOR_SHAPES = [
    [Part("box", (0.025, 0.018, 0.02))],
    [Part("sphere", (0.022,))],
    [Part("cylinder", (0.015, 0.035))],
    [Part("capsule", (0.012, 0.025), quat=(0.7071, 0.7071, 0.0, 0.0))],
    [Part("box", (0.035, 0.01, 0.012)), Part("box", (0.01, 0.03, 0.012), (0.02, 0.0, 0.0))],
    [Part("cylinder", (0.03, 0.008))],
    [Part("box", (0.012, 0.012, 0.04))],
    [Part("sphere", (0.015,)), Part("cylinder", (0.008, 0.02), (0.0, 0.0, -0.03))],
]
MAX_DISTRACTORS = len(DISTRACTOR_SHAPES)


def distractor_objects() -> list[CompositeObject]:
    """Eight static distractors of different shapes and textures, never used in training scenes."""
    objs = []
    for i, (shape, texture) in enumerate(zip(DISTRACTOR_SHAPES, DISTRACTOR_TEXTURES, strict=True)):
        material = CustomMaterial(
            texture=texture,
            tex_name=f"distractor{i}_tex",
            mat_name=f"distractor{i}_mat",
            tex_attrib={"type": "cube"},
            mat_attrib={"texrepeat": "1 1", "specular": "0.3", "shininess": "0.2"},
        )
        objs.append(build_object(f"distractor{i}", shape, free=False, material=material))
    return objs
