"""The operator's command, `sourceflow`, run against the session's stack as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

from local.stack import LocalStack
from tests.e2e.harness.waits import WAIT_SECONDS


@dataclass
class Cli:
    stack: LocalStack

    def sourceflow(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        """The operator's command against this stack, run by `user` (default: whoever runs
        the tests)."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "ops.cli",
                *args,
                "--state-dir",
                str(self.stack.options.state_dir),
            ],
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS,
            env={**os.environ, "USER": user} if user else None,
        )
