import os
import subprocess
import sys

import pytest

_PROBE = "import gym_aloha, mujoco; context = mujoco.GLContext(64, 64); context.make_current(); context.free()"


@pytest.fixture(scope="session")
def mujoco_renders():
    """Skip (saying why) where MuJoCo cannot render offscreen with EGL: gym-aloha renders its cameras every step."""
    probe = subprocess.run([sys.executable, "-c", _PROBE], env={**os.environ, "MUJOCO_GL": "egl"},
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip("MuJoCo cannot render offscreen here (gym-aloha with MUJOCO_GL=egl needs Mesa's EGL: Debian's "
                    f"libegl1 and libgl1-mesa-dri); the probe said: {probe.stderr.strip().splitlines()[-1:]}")
