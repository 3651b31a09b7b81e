"""Tasks, wrappers, data types, clip sampling and synthetic teachers.

Importing this package registers the built-in tasks (MuJoCo, Pendulum and the Atari
games; Atari environments need the ``atari`` extra only when built).
"""

from prefbench.envs import atari, tasks  # noqa: F401  (registers the built-in tasks)
