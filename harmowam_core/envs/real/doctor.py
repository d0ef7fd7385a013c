"""Checks of a real station before anything moves: `harmowam doctor`.

Each check gives (name, ok, detail): RealSense serials found (and whether the configured ones are among
them), libusb, the real-time kernel, each configured arm's FCI host answering on the FCI port, and the
Python packages of the `real` extra. Hosts are only contacted where the station file names them.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import platform
import socket
from dataclasses import dataclass
from pathlib import Path

from harmowam_core.envs.real.config import StationConfig
from harmowam_core.errors import first_line

FCI_PORT = 1337  # libfranka's command connection


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def realtime_kernel() -> Check:
    flag = Path("/sys/kernel/realtime")
    rt = (flag.is_file() and flag.read_text().strip() == "1") or "PREEMPT_RT" in platform.version()
    detail = platform.release() + ("" if rt else ": not PREEMPT_RT; franky refuses to control without it")
    return Check("real-time kernel", rt, detail)


def libusb() -> Check:
    found = ctypes.util.find_library("usb-1.0")
    return Check("libusb", found is not None, found or "libusb-1.0 not found: sudo apt install libusb-1.0-0")


def packages() -> list[Check]:
    out = []
    for module, dist in (("franky", "franky-control"), ("pyrealsense2", "pyrealsense2"), ("hid", "hidapi")):
        ok = importlib.util.find_spec(module) is not None
        out.append(Check(f"python package {dist}", ok, "installed" if ok else "missing: pip install -e '.[real]'"))
    return out


def realsense(station: StationConfig | None) -> Check:
    try:
        from harmowam_core.envs.real.cameras.realsense import connected_serials

        serials = connected_serials()
    except Exception as err:  # noqa: BLE001 - no package, no libusb, no permission: all one line
        return Check("RealSense cameras", False, first_line(err))
    wanted = [c.serial for c in station.cameras if c.backend == "realsense"] if station else []
    missing = [s for s in wanted if s not in serials]
    detail = f"connected: {', '.join(serials) or 'none'}" + (f"; missing: {', '.join(missing)}" if missing else "")
    return Check("RealSense cameras", not missing and (bool(serials) or not wanted), detail)


def fci_host(name: str, host: str, timeout: float = 1.0) -> Check:
    try:
        with socket.create_connection((host, FCI_PORT), timeout=timeout):
            return Check(f"arm {name}", True, f"{host}:{FCI_PORT} answers")
    except OSError as err:
        reason = err.strerror or type(err).__name__
        return Check(f"arm {name}", False, f"{host}:{FCI_PORT} does not answer ({reason}); is FCI enabled in Desk?")


def run_checks(station: StationConfig | None) -> list[Check]:
    checks = [*packages(), libusb(), realtime_kernel(), realsense(station)]
    if station is not None:
        checks += [fci_host(arm.name, arm.host) for arm in station.arms]
    return checks
