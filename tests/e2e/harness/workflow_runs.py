"""Workflows of a test's own on the session's stack: a small workflow file to apply, and its
runs as `sourceflow workflow show` tells them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.harness.cli import Cli
from tests.e2e.harness.waits import wait_for

ALICE = "alice"


def a_file(
    tmp_path: Path, name: str, *, query: str = "SELECT count(*) FROM public.campaign", **fields: Any
) -> Path:
    """A workflows-only file: a sql task whose first value goes to `count`, then a notification
    on its success and a recovery on its failure."""
    workflow = {
        "name": name,
        "variables": {"channel": "#ops"},
        "tasks": [
            {
                "name": "count",
                "kind": "sql",
                "target": "warehouse",
                "query": query,
                "into": "campaigns",
            },
            {
                "name": "say",
                "kind": "notify",
                "subject": "{campaigns} campaigns",
                "message": "counted for {channel}",
                "after": ["count"],
            },
            {
                "name": "recover",
                "kind": "notify",
                "subject": "count failed",
                "message": "see {channel}",
                "after": [{"task": "count", "on": "failure"}],
            },
        ],
        **fields,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"workflows": [workflow]}, sort_keys=False))
    return path


def shown(cli: Cli, run_id: str) -> dict[str, Any]:
    answered = cli.sourceflow("workflow", "show", run_id, "--json", person=ALICE)
    assert answered.returncode in (0, 1), answered.stderr
    document: dict[str, Any] = json.loads(answered.stdout)
    return document


def ended(cli: Cli, run_id: str) -> dict[str, Any]:
    def when_ended() -> dict[str, Any] | None:
        document = shown(cli, run_id)
        return None if document["run"]["status"] == "running" else document

    return wait_for(when_ended, f"workflow run {run_id} to end")
