"""The simulated Franka station (robosuite on MuJoCo): six tasks, scripted experts and OOD variants."""

import logging
import os

# robosuite warns at import about optional extras (a private macro file, robosuite_models, mink IK) that the
# station never uses; keep its errors only. The filter must be on the logger before robosuite creates it.
logging.getLogger("robosuite_logs").addFilter(lambda record: record.levelno >= logging.ERROR)
os.environ.setdefault("MUJOCO_GL", "egl")
