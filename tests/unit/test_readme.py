"""The README stays true where a test can tell: its run diagram names every state the state
machine has (`run --wait`, `run watch` and `runs show` print them), and every file it links is
in this repository."""

from __future__ import annotations

import re
from pathlib import Path

from infra import statemachine
from infra.resources import Names, state_machine_substitutions
from shared.runtime.catalogue import CLOUD_TIMEOUTS

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


def run_diagram() -> str:
    """The drawing under "How a run goes"."""
    found = re.search(r"## How a run goes\n\n```\n(?P<drawing>.*?)```", README, re.S)
    assert found, "README.md has no drawing under 'How a run goes'"
    return found["drawing"]


def test_the_run_diagram_names_every_state_of_the_state_machine() -> None:
    queues = {
        service: "https://sqs.example/q" for service in ("validation", "download", "unlocking")
    }
    definition = statemachine.render(
        state_machine_substitutions(queues, Names("t").event_bus, "arn:alerts", CLOUD_TIMEOUTS)
    )
    drawn = set(re.findall(r"[A-Z][A-Za-z]+", run_diagram()))
    assert sorted(set(definition["States"]) - drawn) == []


def test_every_file_the_readme_links_is_in_the_repository() -> None:
    targets = re.findall(r"\]\((?!https?://|#)([^)#]+)", README)
    assert targets, "the README links no file: the pattern is wrong"
    outside = [target for target in targets if not (ROOT / target).resolve().is_relative_to(ROOT)]
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert (outside, missing) == ([], [])
    assert "../shared/" not in README  # the references beside the repository are not in a clone
