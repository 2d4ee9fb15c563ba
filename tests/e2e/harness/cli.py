"""The operator's command, `sourceflow`, run against the session's stack as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from local.stack import LocalStack
from ops.config import CREDENTIALS_VARIABLE
from tests.e2e.harness.waits import WAIT_SECONDS


@dataclass
class Cli:
    stack: LocalStack

    def sourceflow(
        self,
        *args: str,
        person: str | None = None,
        environment: Mapping[str, str] | None = None,
        answer: str = "",
    ) -> subprocess.CompletedProcess[str]:
        """The operator's command against this stack, as `person` (their own login, from the
        credentials file `sourceflow up` wrote for them), or as the stack's administrator;
        `environment` adds variables (what an impostor might set); `answer` is what the
        operator types when the command asks (nothing: a question is answered by end of file)."""
        credentials = {CREDENTIALS_VARIABLE: str(self.stack.people[person])} if person else {}
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "ops.cli",
                *args,
                "--state-dir",
                str(self.stack.options.state_dir),
            ],
            input=answer,
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS,
            env={**os.environ, **(environment or {}), **credentials},
        )
