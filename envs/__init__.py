"""Tasks, task kinds, wrappers, data types, clip sampling and synthetic teachers.

The task registry (``prefbench.envs.tasks.TASKS``) lists the built-in tasks without
importing what they need: MuJoCo and the Atari emulator load when an environment is built.
"""
