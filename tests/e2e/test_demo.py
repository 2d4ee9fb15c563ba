"""`sourceflow demo` is what a new user runs first; it must keep working and keep checking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import RUN_SECONDS


def test_demo_runs_all_four_flows_approves_resets_them_and_exits_zero(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "ops.cli", "demo", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "All four flows" in completed.stdout
    for flow in ("full_load", "normal", "respecs", "sold"):
        assert flow in completed.stdout
    assert "OK - raw data in" in completed.stdout
    # The scheduler, not the demo, put each special flow back to Normal
    for flow in ("Full Load", "Re-specs", "Sold"):
        assert f"{flow} → Normal (flow reset to Normal: special flow succeeded" in completed.stdout
    # Each Re-specs query waited for a second person, who approved it
    assert "Waiting for approval (sourceflow approvals)" in completed.stdout
    for source in ("demo-listings-a", "demo-partner"):
        assert f"bob: approved the Re-specs query of {source} (asked by alice)" in completed.stdout
    # Then the campaign workflow ran after ingestion, its tasks' statuses shown
    assert "Workflow run campaign-v" in completed.stdout
    assert "check failed" not in completed.stdout
