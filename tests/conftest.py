import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _work_in_scratch_dir(tmp_path_factory):
    """Run every test in a scratch folder.

    MuJoCo appends warnings to ``MUJOCO_LOG.TXT`` in the working directory, and a run with a
    relative ``--out`` writes there too; neither should touch the checkout.
    """
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(old)
