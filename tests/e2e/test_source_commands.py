"""Sources as commands and as code on the embedded stack, as a person would use them: a source
added by command runs, bad input is refused in one line with nothing stored, a pause and a
deletion, the connection tested, and a sources file applied twice (README, "Sources as
commands", "Sources as code")."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from ops.config import OperatorConfig
from ops.source_changes import checked, source_access
from shared.errors import SourceflowError
from shared.store.sources import get_source
from tests.e2e.harness import Harness

DAY = timedelta(days=1)


def ok(harness: Harness, *args: str, person: str = "alice") -> str:
    completed = harness.sourceflow(*args, person=person)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def refused(harness: Harness, *args: str, person: str = "alice") -> str:
    """The one line of a refusal."""
    completed = harness.sourceflow(*args, person=person)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout
    [line] = completed.stderr.strip().splitlines()
    return line


def a_connection(harness: Harness, dataset: str) -> dict[str, Any]:
    return {"base_url": harness.vendor.url, "dataset": dataset}


def test_a_source_added_by_command_runs_and_its_history_names_who(
    harness: Harness, tmp_path: Path
) -> None:
    dataset = harness.new_dataset([DAY / 2])
    source_id = f"cmd-{dataset}"
    connection = a_connection(harness, dataset)
    add = ("sources", "add", source_id, "--type", "http_api")

    # The typo, a cron in words, a schedule under a minute: refused, nothing stored
    typo = json.dumps({**connection, "datset": dataset})
    assert "'datset' was unexpected" in refused(harness, *add, "--connection", typo)
    words = refused(
        harness, *add, "--connection", json.dumps(connection), "--schedule-cron", "every 5 min"
    )
    assert "schedule_cron: 'every 5 min' is not a valid five-field cron" in words
    short = ("--connection", json.dumps(connection), "--schedule-interval", "30s")
    assert "under a minute" in refused(harness, *add, *short)
    assert get_source(harness.db, source_id) is None

    # When alice adds it properly (its connection from a file)
    path = tmp_path / "connection.json"
    path.write_text(json.dumps(connection))
    added = json.loads(
        ok(
            harness,
            *add,
            "--connection",
            f"@{path}",
            "--schedule-interval",
            "1d",
            "--backdate-days",
            "3",
            "--reason",
            "onboarding ACME",
            "--json",
        )
    )
    assert added["changed_by"] == "alice"
    assert added["settings"]["schedule_interval"] == "1d"
    # Then it runs: its first run loads its three days
    out = ok(harness, "run", source_id, "--wait")
    assert "SUCCEEDED" in out and "1 records" in out
    # And its history says who added it and why
    shown = json.loads(ok(harness, "sources", "show", source_id, "--json"))
    [change] = shown["changes"]
    assert (change["action"], change["changed_by"], change["reason"]) == (
        "added",
        "alice",
        "onboarding ACME",
    )
    assert "settings history" in ok(harness, "sources", "show", source_id)
    assert "already exists" in refused(harness, *add, "--connection", json.dumps(connection))


def test_schedule_disable_enable_and_delete_by_command(harness: Harness) -> None:
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=3)
    row = harness.run_source_row

    line = refused(harness, "sources", "schedule", source_id, "--cron", "every 5 min")
    assert "schedule_cron: 'every 5 min' is not a valid five-field cron" in line
    assert row(source_id)["schedule_cron"] is None
    said = ok(harness, "sources", "schedule", source_id, "--cron", "0 3 * * *", person="bob")
    assert said.startswith(f"bob changed {source_id}: schedule_cron none -> 0 3 * * *")
    assert row(source_id)["schedule_cron"] == "0 3 * * *"

    # Disabled until an hour from now: listed as such, with why
    ok(harness, "sources", "disable", source_id, "--reason", "vendor outage", "--until", "1h")
    [listed] = [
        r
        for r in json.loads(ok(harness, "sources", "list", "--json"))
        if r["source_id"] == source_id
    ]
    assert listed["is_active"] is False and listed["disabled"].startswith("vendor outage until")
    enabled = json.loads(ok(harness, "sources", "enable", source_id, "--json"))
    assert (enabled["action"], enabled["was_disabled_for"]) == ("enabled", "vendor outage")

    # Delete: refused while a run holds the source, then done, its history kept
    now = datetime.now(UTC)
    held = "arn:aws:states:eu-west-1:000000000000:execution:sm:held-run"
    harness.set_lock(source_id, held, now, now + timedelta(minutes=10))
    line = refused(harness, "sources", "delete", source_id, "--reason", "contract ended")
    assert "held by run held-run" in line and "sourceflow cancel held-run" in line
    assert row(source_id)["deleted_at"] is None
    harness.set_lock(source_id, None)
    ok(harness, "sources", "delete", source_id, "--reason", "contract ended")
    assert source_id not in ok(harness, "sources", "list")
    assert source_id in ok(harness, "sources", "list", "--deleted")
    shown = json.loads(ok(harness, "sources", "show", source_id, "--json"))
    assert [c["action"] for c in shown["changes"]][:3] == ["deleted", "enabled", "disabled"]
    assert "was deleted" in refused(harness, "run", source_id)


def test_sources_test_checks_the_connection_and_changes_nothing(harness: Harness) -> None:
    dataset = harness.new_dataset([DAY])
    source_id = harness.source_id_of(dataset)
    secret = harness.source_secret(source_id, "api-key", "k" * 24)
    harness.new_source(
        dataset, connection={**a_connection(harness, dataset), "api_key_secret": secret}
    )
    before = harness.run_source_row(source_id)

    tested = json.loads(ok(harness, "sources", "test", source_id, "--json"))
    assert tested["ok"] is True and "secret" in tested["checked"]

    missing = {**a_connection(harness, dataset), "api_key_secret": secret + "-gone"}
    harness.new_source(dataset, connection=missing)
    completed = harness.sourceflow("sources", "test", source_id, person="alice")
    assert completed.returncode == 1
    assert f"{source_id}: SecretNotFound:" in completed.stdout
    after = harness.run_source_row(source_id)
    assert (after["runtime_count"], after["locked_by"]) == (before["runtime_count"], None)


def test_apply_twice_changes_once_and_an_invalid_file_changes_nothing(
    harness: Harness, tmp_path: Path
) -> None:
    # Given the registered sources as a file (those other tests left invalid are dropped: the
    # file's purpose here is ours), and two new sources in it
    exported = tmp_path / "exported.yaml"
    ok(harness, "sources", "export", "--output", str(exported))
    access = source_access(OperatorConfig.load(harness.stack.options.state_dir, {}))
    kept = [
        entry for entry in yaml.safe_load(exported.read_text())["sources"] if valid(entry, access)
    ]
    first, second = harness.new_dataset([DAY]), harness.new_dataset([DAY])
    ours = [
        {"id": f"file-{first}", "type": "http_api", "connection": a_connection(harness, first)},
        {
            "id": f"file-{second}",
            "type": "http_api",
            "connection": a_connection(harness, second),
            "schedule_cron": "*/30 * * * *",
            "lateness_allowance": "5m",
        },
    ]
    sources_file = tmp_path / "sources.yaml"
    sources_file.write_text(yaml.safe_dump({"sources": kept + ours}, sort_keys=False))

    # A dry run plans, and changes nothing
    dry = ok(harness, "apply", str(sources_file), "--dry-run")
    assert f"+ add file-{first} (http_api)" in dry and "dry run: nothing changed" in dry
    assert get_source(harness.db, f"file-{first}") is None

    # Applied: both added, as bob
    applied = json.loads(ok(harness, "apply", str(sources_file), "--json", person="bob"))
    added = {c["source_id"] for c in applied["changes"] if c["action"] == "add"}
    assert added == {f"file-{first}", f"file-{second}"}
    assert applied["changed_by"] == "bob"
    assert harness.run_source_row(f"file-{second}")["schedule_cron"] == "*/30 * * * *"

    # Applied again: nothing to do; exported, the same
    again = ok(harness, "apply", str(sources_file))
    assert again.startswith("no changes: the registered sources match")
    ok(harness, "sources", "export", "--output", str(exported))
    assert ok(harness, "apply", str(exported)).startswith("no changes")

    # An invalid file (a typo in one source) is refused whole, every problem named
    ours[0]["connection"] = {"base_url": harness.vendor.url, "datset": first}
    ours[1]["schedule_cron"] = "every 5 min"
    sources_file.write_text(yaml.safe_dump({"sources": kept + ours}, sort_keys=False))
    completed = harness.sourceflow("apply", str(sources_file), person="alice")
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert "nothing applied; 2 problem(s)" in completed.stderr
    assert "'datset' was unexpected" in completed.stderr and "schedule_cron" in completed.stderr
    assert harness.run_source_row(f"file-{second}")["schedule_cron"] == "*/30 * * * *"


def valid(entry: dict[str, Any], access: Any) -> bool:
    try:
        checked(entry, access)
    except SourceflowError:
        return False
    return True
