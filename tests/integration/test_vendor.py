"""local.vendor as the embedded stack runs it: a process that announces its address, serves on
a real port and stops on SIGTERM (tests/unit/test_vendor.py tests its HTTP API in memory)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_main_announces_address_serves_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "local.vendor", "--port", "0", "--dataset", "tiny=5"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("vendor listening on http://127.0.0.1:")
        base_url = line.removeprefix("vendor listening on ")
        with urllib.request.urlopen(f"{base_url}/datasets/tiny/count", timeout=5) as response:
            assert json.loads(response.read()) == {"count": 5}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
