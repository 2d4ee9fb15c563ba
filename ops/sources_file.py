"""`sourceflow apply FILE` and `sourceflow sources export`: the registered sources as a file
kept with the code (README, "Sources as code").

A sources file is YAML: a top-level `sources:` list, each item a source's settings in the
contract's terms (contracts/source-settings.v1.schema.json: id, type, connection, name,
backdate_days, schedule_cron or schedule_interval, lateness_allowance). A file says what each
source is, whole: a setting left out takes its default.

`apply` makes the registered sources match it: it adds the sources it does not know, changes
those whose settings differ, disables those the file drops (never deletes: a deleted source's
history is kept, its id never reused, and a file is easily cut short by mistake), and enables
again a source it disabled that way when the file lists it again. A pause a person made
(`sourceflow sources disable`) is theirs to end: apply leaves it and says so. The plan
(`plan_changes`) is pure; apply checks the whole file first and refuses it whole, then makes the
whole plan in one transaction over the locked rows, so two applies never interleave and a
second apply of the same file changes nothing.

`export` writes the file that apply reads back as no change: every source that is not deleted
and not dropped by an apply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import yaml

from ops.source_changes import READ_BY_A_RUN, changes_said, checked, described, run_holding
from shared.connectors import SourceAccess
from shared.errors import SourceflowError
from shared.rules.source_settings import (
    SourceSettings,
    differences,
    entry_of,
    settings_of_row,
)
from shared.store.db import Database, session_login
from shared.store.ledger import attributed
from shared.store.sources import insert_source, lock_sources, update_source

# Why apply disabled a source: also how it knows the source is its to enable again.
DROPPED_REASON = "not in the sources file (sourceflow apply)"
# A sources file is a person's text, not a data set: larger is a mistake.
MAX_FILE_BYTES = 4 * 1024 * 1024


class InvalidSourcesFile(SourceflowError):
    """A sources file that cannot be applied; `problems` says every reason, one line each."""

    def __init__(self, origin: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{origin}: nothing applied: {len(self.problems)} problem(s): {self.problems[0]}"
        )


class Action(StrEnum):
    ADD = "add"
    CHANGE = "change"
    DISABLE = "disable"
    ENABLE = "enable"


@dataclass(frozen=True)
class Registered:
    """A registered source as apply sees it: its settings and whether and why it is off."""

    settings: SourceSettings
    is_active: bool = True
    disabled_reason: str | None = None
    deleted: bool = False

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Registered:
        return cls(
            settings_of_row(row),
            is_active=row["is_active"],
            disabled_reason=row["disabled_reason"],
            deleted=row["deleted_at"] is not None,
        )

    @property
    def dropped(self) -> bool:
        """Disabled by an apply whose file did not list it."""
        return not self.is_active and self.disabled_reason == DROPPED_REASON


@dataclass(frozen=True)
class Change:
    source_id: str
    action: Action
    # column -> (from, to); an added source's settings are all "to".
    columns: Mapping[str, tuple[Any, Any]]
    settings: SourceSettings | None = None  # an added source's


@dataclass(frozen=True)
class Plan:
    changes: list[Change] = field(default_factory=list)
    # Sources the file lists that stay as they are for a reason worth saying (a pause).
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {action.value: sum(c.action is action for c in self.changes) for action in Action}


# -- the plan (pure) --------------------------------------------------------------------------


def plan_changes(registered: Sequence[Registered], wanted: Sequence[SourceSettings]) -> Plan:
    """What makes the `registered` sources match the `wanted` ones. A wanted source whose id a
    deleted source holds is refused (InvalidSourcesFile's problems, by the caller)."""
    known = {source.settings.source_id: source for source in registered}
    plan = Plan()
    for settings in wanted:
        source = known.get(settings.source_id)
        if source is not None and source.deleted:
            continue  # refused (deleted_ids)
        if source is None:
            plan.changes.append(
                Change(
                    settings.source_id,
                    Action.ADD,
                    {c: (None, v) for c, v in settings.columns().items()},
                    settings,
                )
            )
            continue
        columns = dict(differences(source.settings, settings))
        action = Action.CHANGE
        if source.dropped:
            action = Action.ENABLE
            columns.update(is_active=(False, True), disabled_reason=(DROPPED_REASON, None))
        elif not source.is_active:
            plan.notes.append(
                f"{settings.source_id} stays disabled ({source.disabled_reason or 'no reason'}):"
                f" a person paused it; `sourceflow sources enable {settings.source_id}`"
            )
        if columns:
            plan.changes.append(Change(settings.source_id, action, columns))
    listed = {settings.source_id for settings in wanted}
    for source in registered:
        if source.settings.source_id not in listed and source.is_active:
            plan.changes.append(
                Change(
                    source.settings.source_id,
                    Action.DISABLE,
                    {"is_active": (True, False), "disabled_reason": (None, DROPPED_REASON)},
                )
            )
    return plan


def deleted_ids(registered: Sequence[Registered], wanted: Sequence[SourceSettings]) -> list[str]:
    deleted = {source.settings.source_id for source in registered if source.deleted}
    return [
        f"{settings.source_id}: a deleted source holds this id with its history; give the "
        "source another id"
        for settings in wanted
        if settings.source_id in deleted
    ]


# -- reading and writing the file --------------------------------------------------------------


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors and aliases: a few lines of aliases can expand to gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a sources file", event.start_mark
            )
        return super().compose_node(parent, index)


# Booleans as YAML 1.2 reads them: true and false only. YAML 1.1's on/off/yes/no would make
# an edge's `on: failure` (a workflow's `after`) the key True, and a value `no` the false.
_NoAliases.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_NoAliases.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


class _NoAliasesWritten(yaml.SafeDumper):
    """Values written out in full where they repeat (a sources file has no aliases), and text
    holding one of YAML's own line breaks double-quoted, where they are escaped (elsewhere a
    reader folds them into spaces)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = '"' if any(mark in text for mark in _YAML_LINE_BREAKS) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_YAML_LINE_BREAKS = ("\x85", "\u2028", "\u2029")
_NoAliasesWritten.add_representer(str, _text)


@dataclass(frozen=True)
class SourcesFile:
    """What a sources file holds: its `sources:` list and its `workflows:` list, each None
    when the file has no such key (apply then leaves those as they are)."""

    sources: list[Any] | None
    workflows: Any = None


FILE_KEYS = ("sources", "workflows")


def read_file(text: str, origin: str) -> SourcesFile:
    """A sources file's lists (each item still to be checked): sources, workflows or both."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise InvalidSourcesFile(origin, [f"the file is over {MAX_FILE_BYTES:,} bytes"])
    try:
        document = yaml.load(text, Loader=_NoAliases)  # (a SafeLoader)
    except yaml.YAMLError as exc:
        raise InvalidSourcesFile(origin, [_yaml_problem(exc)]) from None
    if not isinstance(document, Mapping) or not set(FILE_KEYS) & set(document):
        raise InvalidSourcesFile(
            origin,
            ["the file is a mapping with the key sources (a list of sources), workflows, or both"],
        )
    others = sorted(str(key) for key in document if key not in FILE_KEYS)
    if others:
        raise InvalidSourcesFile(
            origin, [f"unknown top-level key(s) {others}; only sources and workflows"]
        )
    entries = document.get("sources")
    if "sources" in document and not isinstance(entries, list):
        raise InvalidSourcesFile(origin, ["sources: is not a list (write `sources: []` for none)"])
    return SourcesFile(entries, document.get("workflows"))


def read_entries(text: str, origin: str) -> list[Any]:
    """The items of a sources file's `sources:` list (each still to be checked)."""
    entries = read_file(text, origin).sources
    if entries is None:
        raise InvalidSourcesFile(origin, ["the file has no sources: list"])
    return entries


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where the YAML is wrong and how, on one line."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    hint = ""
    if "alias" in str(getattr(exc, "context", "")) + problem:
        hint = "; quote a value that starts with * or &, e.g. schedule_cron: '*/5 * * * *'"
    return f"not YAML: {where}{problem}{hint}"


def checked_entries(
    entries: Sequence[Any], origin: str, access: SourceAccess
) -> list[SourceSettings]:
    """Every item checked as `sources add` checks a source; InvalidSourcesFile names every
    problem of every item, and every id listed twice."""
    wanted: list[SourceSettings] = []
    problems: list[str] = []
    for index, entry in enumerate(entries):
        try:
            wanted.append(checked(entry, access))
        except SourceflowError as exc:
            problems.append(f"sources[{index}]: {exc}")
    seen: set[str] = set()
    for settings in wanted:
        if settings.source_id in seen:
            problems.append(f"{settings.source_id}: listed more than once")
        seen.add(settings.source_id)
    if problems:
        raise InvalidSourcesFile(origin, problems)
    return wanted


def export_document(registered: Sequence[Registered]) -> str:
    """The sources file of the registered sources, as apply reads it back: no change."""
    entries = [
        entry_of(source.settings)
        for source in sorted(registered, key=lambda source: source.settings.source_id)
        if not source.deleted and not source.dropped
    ]
    header = (
        "# The registered sources: `sourceflow apply FILE` makes them match this file "
        '(README, "Sources as code").\n'
    )
    return header + dump_yaml({"sources": entries})


def dump_yaml(document: Mapping[str, Any]) -> str:
    """A document as a sources file writes it: no aliases, keys in their order."""
    return yaml.dump(
        document,
        Dumper=_NoAliasesWritten,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
    )


# -- the database ------------------------------------------------------------------------------


def apply_file(
    db: Database,
    wanted: Sequence[SourceSettings],
    *,
    origin: str,
    reason: str,
    dry_run: bool,
    now: datetime,
) -> tuple[Plan, str]:
    """Plan the file's changes over the locked rows and, unless `dry_run`, make them all in
    that transaction. Returns the plan and the login that made it."""
    with db.transaction() as cur:
        rows = {row["source_id"]: row for row in lock_sources(cur)}
        registered = [Registered.of(row) for row in rows.values()]
        plan = plan_changes(registered, wanted)
        problems = deleted_ids(registered, wanted) + _held_by_runs(plan, rows, now)
        if problems:
            raise InvalidSourcesFile(origin, problems)
        if not dry_run:
            with attributed(cur, reason):
                for change in plan.changes:
                    _make(cur, change)
        who = session_login(cur)
    return plan, who


def _held_by_runs(plan: Plan, rows: Mapping[str, Mapping[str, Any]], now: datetime) -> list[str]:
    """The planned changes of a type or connection that a run under way reads."""
    held = []
    for change in plan.changes:
        holder = None if change.action is Action.ADD else run_holding(rows[change.source_id], now)
        if holder is not None and READ_BY_A_RUN & change.columns.keys():
            held.append(
                f"{change.source_id}: run {holder} holds it, and its type or connection would "
                f"change under it; apply once the run ends (or `sourceflow cancel {holder}`)"
            )
    return held


def _make(cur: Any, change: Change) -> None:
    if change.action is Action.ADD:
        assert change.settings is not None
        insert_source(cur, change.settings.columns())
    else:
        update_source(cur, change.source_id, {c: to for c, (_, to) in change.columns.items()})


def export_sources(db: Database) -> str:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM public.source ORDER BY source_id")
        registered = [Registered.of(row) for row in cur.fetchall()]
    return export_document(registered)


def plan_as_json(plan: Plan, *, origin: str, dry_run: bool, who: str) -> dict[str, Any]:
    return {
        "file": origin,
        "dry_run": dry_run,
        "applied": not dry_run and bool(plan.changes),
        "changed_by": None if dry_run or not plan.changes else who,
        "counts": plan.counts(),
        "changes": [
            {
                "source_id": change.source_id,
                "action": change.action.value,
                "changes": described(change.columns),
            }
            for change in plan.changes
        ],
        "notes": plan.notes,
    }


_MARKS = {Action.ADD: "+", Action.CHANGE: "~", Action.DISABLE: "-", Action.ENABLE: "+"}


def plan_said(plan: Plan, *, origin: str, dry_run: bool, who: str) -> str:
    """The plan as people read it, then what was done."""
    if not plan.changes:
        lines = [f"no changes: the registered sources match {origin}"]
    else:
        counts = ", ".join(f"{n} to {action}" for action, n in plan.counts().items() if n)
        lines = [f"plan for {origin}: {counts}"]
        for change in plan.changes:
            line = f"  {_MARKS[change.action]} {change.action.value} {change.source_id}"
            if change.action is Action.ADD:
                assert change.settings is not None
                line += f" ({change.settings.source_type})"
            elif change.action is Action.DISABLE:
                line += f": {DROPPED_REASON}"
            else:
                line += ": " + changes_said(described(change.columns))
            lines.append(line)
        lines.append(
            "dry run: nothing changed"
            if dry_run
            else f"applied as {who}: {len(plan.changes)} change(s)"
        )
    lines.extend(f"  note: {note}" for note in plan.notes)
    return "\n".join(lines)
