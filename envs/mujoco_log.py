"""MuJoCo's C-level warnings, through Python's logging instead of the terminal.

MuJoCo (4.0.0 here) prints a deprecation warning for ``settotalmass`` in Gymnasium's model
files (Hopper, Walker2d, HalfCheetah, ...) each time one compiles, i.e. for every
environment made, and appends it to ``MUJOCO_LOG.TXT`` in the working directory. The
attribute still works (masses are scaled as before), so that message is dropped; any
other MuJoCo warning goes to the ``prefbench.mujoco`` logger.
"""

from __future__ import annotations

import logging

LOGGER = logging.getLogger("prefbench.mujoco")
#: Messages known to be harmless for the tasks registered here.
DROPPED = ("compiler attribute 'settotalmass' is deprecated",)


def _handler(message: str) -> None:
    if not any(known in message for known in DROPPED):
        LOGGER.warning("MuJoCo: %s", message)


def route_mujoco_warnings() -> None:
    """Install the handler for this process (MuJoCo's handler is process-wide); idempotent."""
    import mujoco  # the mujoco extra; only tasks that need it call this

    if mujoco.get_mju_user_warning() is not _handler:
        mujoco.set_mju_user_warning(_handler)
