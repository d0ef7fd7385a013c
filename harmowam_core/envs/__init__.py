"""Stations behind one protocol: the simulator (default) and, later, the real Franka station."""

from harmowam_core.envs.base import OOD_KINDS, Env, Observation

__all__ = ["OOD_KINDS", "Env", "Observation", "make_env"]


def make_env(recipe, backend: str = "sim", render: bool = True) -> Env:
    """The station for a recipe. `backend` is "sim" (robosuite); `render=False` skips cameras."""
    from harmowam_core.errors import HarmoWAMError

    if backend != "sim":
        raise HarmoWAMError(f"unknown station backend '{backend}' (available: sim)")
    from harmowam_core.envs.sim.station import SimStation

    return SimStation(recipe, render=render)
