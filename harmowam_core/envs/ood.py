"""The out-of-distribution protocols (paper section 4.3), one registry: a protocol's name, what it changes and the
recipe section that parameterises it. Every command and station validates names here.

    check_protocol("position")             # -> "position"; HarmoWAMError (one line) for an unknown name
    parse_protocols("none,position")       # ["none", "position"]; "all" -> every protocol
    PROTOCOLS["objects"].summary

A station applies a protocol from its recipe section (`recipe.ood.<section>`): the simulator in
`envs.sim.station` (distractors and lighting, the test region, substitute objects), the real station by asking
the operator to set the scene.
"""

from __future__ import annotations

from dataclasses import dataclass

from harmowam_core.errors import ParameterError


@dataclass(frozen=True)
class OODProtocol:
    name: str
    label: str  # in tables and plots
    summary: str  # what changes against the training scenes
    section: str | None  # the recipe's `ood.<section>` that parameterises it (None: in-domain)


PROTOCOLS: dict[str, OODProtocol] = {
    p.name: p
    for p in (
        OODProtocol("none", "in-domain", "in-domain: the training scenes' distribution", None),
        OODProtocol("background", "background", "distractor objects on the table and changed lighting", "background"),
        OODProtocol("position", "position", "objects placed in a table region unseen in training", "position"),
        OODProtocol("objects", "objects", "the task's objects replaced by unseen ones of the same kind", "objects"),
    )
}
OOD_KINDS = tuple(PROTOCOLS)  # the names, in-domain first


def check_protocol(name: str) -> str:
    """`name` if it is a protocol; else ParameterError naming the choices."""
    if name not in PROTOCOLS:
        raise ParameterError("ood", f"unknown OOD protocol '{name}' (choose from {', '.join(OOD_KINDS)})")
    return name


def parse_protocols(text: str) -> list[str]:
    """One protocol, a comma-separated list of them (duplicates dropped, order kept), or `all`."""
    if text == "all":
        return list(OOD_KINDS)
    protocols = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p or p not in PROTOCOLS for p in protocols):
        raise ParameterError("ood", f"OOD protocols are {', '.join(OOD_KINDS)} (comma-separated) or all; got '{text}'")
    return list(dict.fromkeys(protocols))
