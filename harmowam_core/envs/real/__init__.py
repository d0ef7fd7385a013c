"""The real Franka station (paper appendix A): franky-control arms, RealSense cameras, SpaceMouse or keyboard
teleoperation, and a safety layer every command passes through.

- `config`: the station file (arms, limits, cameras); `safety`: limits, box, NaN/inf, watchdog, hysteresis;
- `arm`: `FrankyArm` and `DryRunArm`; `cameras`: the `Camera` protocol and its
  backends (`realsense`); `station`: `RealStation` (the Env);
- `teleop`: SpaceMouse / terminal keyboard pilots; `doctor`: the checks of `harmowam doctor`.
"""
