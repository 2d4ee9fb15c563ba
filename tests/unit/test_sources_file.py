"""A sources file (ops/sources_file.py): the plan that makes the registered sources match it,
the file read whole or refused, and the property that an exported file applies as no change."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ops.sources_file import (
    DROPPED_REASON,
    Action,
    InvalidSourcesFile,
    Registered,
    checked_entries,
    export_document,
    plan_changes,
    plan_said,
    read_entries,
    read_file,
)
from shared.rules.source_settings import SourceSettings, settings_from_entry
from tests.fakes.secrets import fake_access

ACCESS = fake_access()


def a_source(source_id: str = "acme", **changes: Any) -> SourceSettings:
    entry: dict[str, Any] = {
        "id": source_id,
        "type": "http_api",
        "connection": {"base_url": "https://api.acme.example", "dataset": source_id},
    }
    return settings_from_entry({**entry, **changes})


def registered(source_id: str = "acme", **state: Any) -> Registered:
    return Registered(a_source(source_id), **state)


def planned(registered_sources: list[Registered], wanted: list[SourceSettings]) -> list[Any]:
    return [
        (change.source_id, change.action, dict(change.columns))
        for change in plan_changes(registered_sources, wanted).changes
    ]


# -- the plan ----------------------------------------------------------------------------------


def test_a_source_the_file_adds_is_added_whole() -> None:
    [(source_id, action, columns)] = planned([], [a_source("new")])
    assert (source_id, action) == ("new", Action.ADD)
    assert columns["backdate_days"] == (None, 30)


def test_a_setting_that_differs_is_changed_and_only_it() -> None:
    wanted = a_source(schedule_interval="1h")
    assert planned([registered()], [wanted]) == [
        ("acme", Action.CHANGE, {"schedule_interval": (None, timedelta(hours=1))})
    ]


def test_a_source_the_file_drops_is_disabled_never_deleted() -> None:
    assert planned([registered("acme"), registered("globex")], [a_source("acme")]) == [
        (
            "globex",
            Action.DISABLE,
            {"is_active": (True, False), "disabled_reason": (None, DROPPED_REASON)},
        )
    ]


def test_a_dropped_source_listed_again_is_enabled_with_its_changes() -> None:
    dropped = registered(is_active=False, disabled_reason=DROPPED_REASON)
    assert planned([dropped], [a_source(backdate_days=7)]) == [
        (
            "acme",
            Action.ENABLE,
            {
                "backdate_days": (30, 7),
                "is_active": (False, True),
                "disabled_reason": (DROPPED_REASON, None),
            },
        )
    ]


def test_a_persons_pause_is_left_to_them_and_said() -> None:
    paused = registered(is_active=False, disabled_reason="vendor outage")
    plan = plan_changes([paused], [a_source()])
    assert plan.changes == []
    assert plan.notes == [
        "acme stays disabled (vendor outage): a person paused it; `sourceflow sources enable acme`"
    ]
    # and a file that drops a paused source has nothing to disable
    assert plan_changes([paused], []).changes == []


def test_a_deleted_source_is_neither_disabled_again_nor_revived() -> None:
    deleted = registered(is_active=False, deleted=True)
    assert planned([deleted], []) == []
    assert planned([deleted], [a_source()]) == []  # (its id refused: deleted_ids)


def test_the_plan_reads_as_marks_and_changes() -> None:
    plan = plan_changes(
        [registered("acme"), registered("globex")],
        [a_source("acme", backdate_days=7), a_source("new")],
    )
    said = plan_said(plan, origin="sources.yaml", dry_run=True, who="alice")
    assert said.splitlines() == [
        "plan for sources.yaml: 1 to add, 1 to change, 1 to disable",
        "  ~ change acme: backdate_days 30 -> 7",
        "  + add new (http_api)",
        f"  - disable globex: {DROPPED_REASON}",
        "dry run: nothing changed",
    ]
    assert plan_said(plan_changes([], []), origin="f", dry_run=False, who="a") == (
        "no changes: the registered sources match f"
    )


# -- the file ----------------------------------------------------------------------------------


def test_yes_no_on_and_off_are_words_not_booleans() -> None:
    """YAML 1.1 reads `on:` as the key True: an edge's `{task: x, on: failure}` would lose it,
    and a connection's `region: no` (Norway) would be false."""
    entries = read_entries("sources:\n  - {on: failure, a: yes, b: no, c: true}", "f")

    assert entries == [{"on": "failure", "a": "yes", "b": "no", "c": True}]
    assert read_file("workflows: []", "f").sources is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the file is a mapping with the key sources (a list of sources), workflows"),
        ("workflows: []", "the file has no sources: list"),
        ("sources: 3", "sources: is not a list"),
        ("sources: []\nsoruces: []", "unknown top-level key(s) ['soruces']"),
        ("sources:\n  - id: [", "not YAML: line 2"),
        ("sources:\n  - schedule_cron: */5 * * * *", "quote a value that starts with *"),
        ("base: &b {type: http_api}\nsources: [*b]", "aliases (*name) are not allowed"),
    ],
)
def test_a_file_that_is_not_a_sources_list_is_refused_by_line(text: str, problem: str) -> None:
    with pytest.raises(InvalidSourcesFile) as refused:
        read_entries(text, "sources.yaml")
    [said] = refused.value.problems
    assert problem in said


def test_every_problem_of_every_item_is_named_and_nothing_is_kept() -> None:
    entries = read_entries(
        "sources:\n"
        "  - {id: a, type: http_api, connection: {base_url: 'https://x.example'}}\n"
        "  - {id: b, type: http_api, connection: {base_url: 'https://x.example', dataset: d},"
        " schedule_cron: every 5 min}\n"
        "  - {id: c, type: http_api, connection: {base_url: 'https://x.example', dataset: d}}\n"
        "  - {id: c, type: http_api, connection: {base_url: 'https://x.example', dataset: d}}\n",
        "sources.yaml",
    )
    with pytest.raises(InvalidSourcesFile) as refused:
        checked_entries(entries, "sources.yaml", ACCESS)
    problems = refused.value.problems
    assert [p.split(":", 1)[0] for p in problems] == ["sources[0]", "sources[1]", "c"]
    assert "dataset" in problems[0] and "schedule_cron" in problems[1]
    assert problems[2] == "c: listed more than once"
    assert str(refused.value).startswith("sources.yaml: nothing applied: 3 problem(s): ")


# -- export, then apply: no change --------------------------------------------------------------

_IDS = st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True)
_CONNECTION_EXTRAS: list[dict[str, Any]] = [{}, {"page_size": 500}, {"limits": {"max_pages": 9}}]
_CRONS = st.sampled_from(["*/15 * * * *", "0 6 * * 1-5", "30 2 1 * *", "0 0 29 2 *"])


@st.composite
def a_registered_source(draw: st.DrawFn, source_id: str) -> Registered:
    schedule = draw(st.sampled_from(["none", "cron", "interval"]))
    minutes = st.integers(min_value=1, max_value=60 * 24 * 60)
    source = SourceSettings(
        source_id=source_id,
        source_type="http_api",
        name=draw(st.text(min_size=1, max_size=40)),
        connection={
            "base_url": "https://api.acme.example",
            "dataset": draw(st.text(min_size=1, max_size=20)),
            **draw(st.sampled_from(_CONNECTION_EXTRAS)),
        },
        backdate_days=draw(st.integers(min_value=1, max_value=36500)),
        schedule_cron=draw(_CRONS) if schedule == "cron" else None,
        schedule_interval=timedelta(minutes=draw(minutes)) if schedule == "interval" else None,
        lateness_allowance=draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=1))),
        overdue_after_periods=draw(
            st.floats(min_value=1, max_value=100, exclude_min=True, allow_nan=False)
        ),
    )
    state: dict[str, Any] = draw(
        st.sampled_from(
            [
                {},
                {"is_active": False, "disabled_reason": "vendor outage"},
                {"is_active": False, "disabled_reason": DROPPED_REASON},
                {"is_active": False, "deleted": True},
            ]
        )
    )
    return Registered(source, **state)


@st.composite
def registered_sources(draw: st.DrawFn) -> list[Registered]:
    ids = draw(st.lists(_IDS, max_size=6, unique=True))
    return [draw(a_registered_source(source_id)) for source_id in ids]


@settings(max_examples=150)
@given(registered_sources())
def test_an_exported_file_applies_as_no_change(sources: list[Registered]) -> None:
    exported = export_document(sources)
    wanted = checked_entries(read_entries(exported, "export"), "export", ACCESS)
    plan = plan_changes(sources, wanted)
    assert plan.changes == []
    assert {s.source_id for s in wanted} == {
        s.settings.source_id for s in sources if not s.deleted and not s.dropped
    }


def test_an_export_writes_a_repeated_value_in_full() -> None:
    # (found by the property above: YAML would write the second as an alias, which a sources
    # file refuses)
    shared = {"base_url": "https://api.acme.example", "dataset": "d", "limits": {"max_pages": 9}}
    sources = [Registered(a_source(source_id, connection=shared)) for source_id in ("a", "b")]
    exported = export_document(sources)
    assert "*id" not in exported and exported.count("max_pages: 9") == 2
    assert len(read_entries(exported, "export")) == 2


def test_an_export_keeps_text_with_yamls_own_line_breaks() -> None:
    # (found by the property above: unquoted, a reader folds U+0085 into a space)
    names = ["next\x85line", "line\u2028separator", "Société Générale", "yes", "*star"]
    sources = [Registered(a_source(f"s{i}", name=name)) for i, name in enumerate(names)]
    entries = read_entries(export_document(sources), "export")
    assert [entry["name"] for entry in entries] == names
