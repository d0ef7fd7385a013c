"""Stations behind one protocol: the simulator (default) and the real Franka station."""

from harmowam_core.envs.base import Env, Observation, Station
from harmowam_core.envs.ood import OOD_KINDS

__all__ = ["BACKENDS", "OOD_KINDS", "Env", "Observation", "Station", "make_env"]


BACKENDS = ("sim", "real")


def make_env(
    recipe, backend: str = "sim", render: bool = True, station=None, dry_run: bool = False, confirm=None
) -> Env:
    """The station for a recipe. `backend` "sim" (robosuite; `render=False` skips cameras) or "real" (the
    Franka station of the configuration file `station`, default location when None; `dry_run` connects to
    nothing and prints the commands instead; `confirm(question) -> bool` asks the operator, default a y/n
    prompt on the terminal)."""
    from harmowam_core.errors import HarmoWAMError

    if backend == "sim":
        from harmowam_core.envs.sim.station import SimStation

        return SimStation(recipe, render=render)
    if backend == "real":
        from harmowam_core.envs.real.config import load_station_config
        from harmowam_core.envs.real.station import RealStation

        return RealStation(recipe, load_station_config(station), dry_run=dry_run, confirm=confirm)
    raise HarmoWAMError(f"unknown station backend '{backend}' (available: {', '.join(BACKENDS)})")
