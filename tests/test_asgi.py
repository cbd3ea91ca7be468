"""The process settings of the ASGI entry point (chatproject/asgi.py), in a fresh process as daphne starts one."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("configured, interval", [(None, 0.001), ("2.5", 0.0025)])
def test_a_server_process_hands_the_gil_over_within_its_switch_interval(configured, interval):
    """Python's default 5 ms would let the busy event loop keep the database thread waiting
    that long after every round trip (CHAT_SWITCH_INTERVAL_MS)."""
    env = {k: v for k, v in os.environ.items() if k != "CHAT_SWITCH_INTERVAL_MS"}
    if configured:
        env["CHAT_SWITCH_INTERVAL_MS"] = configured
    shown = subprocess.run(
        [sys.executable, "-c", "import sys, chatproject.asgi; print(sys.getswitchinterval())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    assert float(shown.stdout) == pytest.approx(interval)
