"""`sourceflow sources add|edit|schedule|disable|enable|delete|test`: a person changes a
source without SQL (README, "Sources as commands").

Every change is checked whole before anything is stored, by the rules the services read the
row with (shared.rules.source_settings, and the connectors' own checks of a connection:
shared.connectors.SourceAccess.check_settings); bad input changes nothing. Each is one
transaction on the source's locked row, made as the person's own login with their reason, which
the database records in the source's settings history (public.source_change, migration 0018).

A deleted source keeps its row, marked deleted: its runs, flow history, backfills and approvals
keep naming it, nothing is moved, and its id is never given to another source (whose history
would then read as the old one's).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from ops.config import OperatorConfig, OperatorError, unknown_source
from shared.connectors import SourceAccess
from shared.connectors.endpoints import HostRule
from shared.errors import SourceflowError
from shared.rules.backfills import BackfillState
from shared.rules.leases import lease_is_live
from shared.rules.source_settings import (
    SourceSettings,
    differences,
    entry_of,
    file_field,
    format_duration,
    settings_from_entry,
    settings_of_row,
)
from shared.runtime.secrets import SecretBinding, Secrets, connection_secrets_prefix
from shared.store.db import Database, fetch_one, session_login
from shared.store.ledger import attributed
from shared.store.sources import get_source, insert_source, lock_source, update_source
from shared.timefmt import isoformat

# An enabled source's state.
ENABLED = {"is_active": True, "disabled_reason": None, "disabled_until": None}
# Changing these while a run holds the source would change what its download reads mid-run.
READ_BY_A_RUN = frozenset({"source_type", "connection"})
# The backfills a deletion would leave without their source.
_UNFINISHED_BACKFILL = (
    BackfillState.AWAITING_APPROVAL,
    BackfillState.READY,
    BackfillState.RUNNING,
)
# What `sources test` proves of each source type (validation's check, the connector's check()).
TESTED = {
    "http_api": "its settings, and its API key's secret is readable if it names one (the vendor "
    "itself is first asked by a run's download)",
    "s3_files": "its bucket's prefix can be listed",
    "postgres": "the database accepts its login and its table's filter columns are dates or times",
}


def source_access(config: OperatorConfig, *, reading: bool = False) -> SourceAccess:
    """What a person's commands check connections with: the deployment's secrets prefix and
    host rule (the embedded stack's sources may reach loopback); with `reading`, as
    `sources test` reads secrets and lists buckets, with the person's AWS credentials."""
    binding = SecretBinding(
        config.values.get("CONNECTION_SECRETS_PREFIX") or connection_secrets_prefix(config.stage)
    )
    hosts = HostRule(config.values.get("ALLOW_LOOPBACK_SOURCES", "").lower() == "true")
    if not reading:
        # Checking settings reads no secret and opens no connection.
        return SourceAccess(Secrets(None, binding), hosts, s3=lambda: None)
    return SourceAccess(
        Secrets(config.client("secretsmanager"), binding), hosts, s3=lambda: config.client("s3")
    )


def checked(entry: Mapping[str, Any], access: SourceAccess) -> SourceSettings:
    """The settings `entry` gives (sources-file terms), every rule applied."""
    settings = settings_from_entry(entry)
    access.check_settings(settings.source_id, settings.source_type, settings.connection)
    return settings


def shown(value: Any) -> Any:
    """A setting's value as a person reads it (and JSON carries it)."""
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def described(diff: Mapping[str, tuple[Any, Any]]) -> dict[str, dict[str, Any]]:
    """Each changed setting, by its sources-file name: from, to."""
    return {
        file_field(column): {"from": shown(before), "to": shown(after)}
        for column, (before, after) in diff.items()
    }


# -- add, edit, schedule ----------------------------------------------------------------------


def add_source(
    db: Database, entry: Mapping[str, Any], *, access: SourceAccess, reason: str
) -> dict[str, Any]:
    settings = checked(entry, access)
    with db.transaction() as cur:
        with attributed(cur, reason):
            added = insert_source(cur, settings.columns())
        if not added:
            raise _id_taken(
                fetch_one(
                    cur, "SELECT * FROM public.source WHERE source_id = %s", (settings.source_id,)
                )
            )
        who = session_login(cur)
    return {
        "source_id": settings.source_id,
        "action": "added",
        "settings": entry_of(settings),
        "changed_by": who,
    }


def edit_source(
    db: Database,
    source_id: str,
    given: Mapping[str, Any],
    *,
    access: SourceAccess,
    reason: str,
    now: datetime,
) -> dict[str, Any]:
    """Change the settings `given` (sources-file terms; None takes the setting away) and keep
    the others; the result is checked whole, as `sources add` checks a new source."""
    with db.transaction() as cur:
        row = _changeable(cur, source_id)
        current = settings_of_row(row)
        merged = {**entry_of(current), **given}
        wanted = checked({k: v for k, v in merged.items() if v is not None}, access)
        diff = differences(current, wanted)
        if READ_BY_A_RUN & diff.keys():
            _refuse_while_running(row, now, "change its type or connection")
        if diff:
            with attributed(cur, reason):
                update_source(cur, source_id, {c: after for c, (_, after) in diff.items()})
        who = session_login(cur)
    return {
        "source_id": source_id,
        "action": "edited" if diff else "unchanged",
        "changes": described(diff),
        "changed_by": who,
    }


def schedule_entry(cron: str | None, interval: str | None) -> dict[str, str | None]:
    """The schedule settings `sources schedule` (and add, edit) set: one, or none."""
    return {"schedule_cron": cron, "schedule_interval": interval}


# -- disable, enable, delete ------------------------------------------------------------------


def disable_source(
    db: Database, source_id: str, *, reason: str, until: datetime | None, now: datetime
) -> dict[str, Any]:
    """Pause the source: the scheduler starts no run of it (nor of its backfills), and a run
    asked for is skipped, until it is enabled, or until `until` (the scheduler's first tick
    then enables it). A run under way goes on."""
    if until is not None and until <= now:
        raise OperatorError(
            f"--until {isoformat(until)} is not in the future; give a later time, or a "
            "duration such as 2h"
        )
    row, who = _set_state(
        db,
        source_id,
        {"is_active": False, "disabled_reason": reason, "disabled_until": until},
        reason=reason,
    )
    return {
        "source_id": source_id,
        "action": "disabled",
        "reason": reason,
        "disabled_until": shown(until),
        "was_active": row["is_active"],
        "run_under_way": run_holding(row, now),
        "changed_by": who,
    }


def enable_source(db: Database, source_id: str, *, reason: str) -> dict[str, Any]:
    row, who = _set_state(db, source_id, ENABLED, reason=reason, unless_already=True)
    return {
        "source_id": source_id,
        "action": "unchanged" if row["is_active"] else "enabled",
        "was_disabled_for": row["disabled_reason"],
        "changed_by": who,
    }


def delete_source(
    db: Database,
    source_id: str,
    *,
    reason: str,
    now: datetime,
    backfills: list[dict[str, Any]],
) -> dict[str, Any]:
    """Delete the source: it never runs again and leaves the lists; its row stays, marked
    deleted, with its history. Refused while a run holds it or a backfill of it is unfinished
    (`backfills`: the source's, as `sourceflow backfill list` shows them)."""
    unfinished = [b for b in backfills if b["state"] in _UNFINISHED_BACKFILL]
    if unfinished:
        first = unfinished[0]
        raise OperatorError(
            f"source {source_id!r} has an unfinished backfill ({first['backfill_id']}, "
            f"{first['state']}); cancel it first (`sourceflow backfill cancel "
            f"{first['backfill_id']} --reason …`)"
        )
    _, who = _set_state(
        db,
        source_id,
        {"is_active": False, "disabled_reason": None, "disabled_until": None, "deleted_at": now},
        reason=reason,
        refuse=lambda row: _refuse_while_running(row, now, "delete it"),
    )
    return {"source_id": source_id, "action": "deleted", "reason": reason, "changed_by": who}


# -- test -------------------------------------------------------------------------------------


def try_connection(db: Database, source_id: str, *, access: SourceAccess) -> dict[str, Any]:
    """Validation's check of the source's connection, from here: its settings, its secret, and
    what its connector's check() proves. Nothing is locked, counted or written."""
    source = get_source(db, source_id)
    if source is None:
        raise unknown_source(source_id)
    source_type = source["source_type"]
    tested = {"source_id": source_id, "source_type": source_type}
    try:
        access.check(source_id, source_type, source["connection"])
    except SourceflowError as exc:
        error = getattr(exc, "error_name", type(exc).__name__)
        return {**tested, "ok": False, "error": error, "detail": str(exc)}
    return {**tested, "ok": True, "checked": TESTED.get(source_type, "its settings")}


# -- the source row ---------------------------------------------------------------------------


def _set_state(
    db: Database,
    source_id: str,
    state: Mapping[str, Any],
    *,
    reason: str,
    unless_already: bool = False,
    refuse: Callable[[Mapping[str, Any]], None] = lambda row: None,
) -> tuple[dict[str, Any], str]:
    """Set whether the source is active (and why not) on its locked row, unless `refuse`
    raises, or `unless_already` and it is so already; returns the row as it was, and who."""
    with db.transaction() as cur:
        row = _changeable(cur, source_id)
        refuse(row)
        if not (unless_already and all(row[column] == value for column, value in state.items())):
            with attributed(cur, reason):
                update_source(cur, source_id, state)
        return row, session_login(cur)


def _changeable(cur: Any, source_id: str) -> dict[str, Any]:
    """The source's row, locked; refused if there is none or it was deleted."""
    row = lock_source(cur, source_id)
    if row is None:
        raise unknown_source(source_id)
    if row["deleted_at"] is not None:
        raise OperatorError(
            f"source {source_id!r} was deleted at {isoformat(row['deleted_at'])}; a deleted "
            "source does not change (`sourceflow sources show` keeps its history)"
        )
    return row


def _id_taken(row: Mapping[str, Any] | None) -> OperatorError:
    assert row is not None  # (the insert met its id)
    source_id = row["source_id"]
    if row["deleted_at"] is not None:
        return OperatorError(
            f"source {source_id!r} was deleted at {isoformat(row['deleted_at'])} and its id "
            "stays with its history; give the new source another id"
        )
    return OperatorError(
        f"source {source_id!r} already exists; change it with `sourceflow sources edit "
        f"{source_id} …`"
    )


def run_holding(row: Mapping[str, Any], now: datetime) -> str | None:
    """The execution whose run holds the source now, if one does."""
    if lease_is_live(row["locked_by"], row["lock_expires_at"], now):
        return str(row["locked_by"]).rsplit(":", 1)[-1]
    return None


def _refuse_while_running(row: Mapping[str, Any], now: datetime, what: str) -> None:
    holder = run_holding(row, now)
    if holder is not None:
        raise OperatorError(
            f"source {row['source_id']!r} is held by run {holder} (until "
            f"{isoformat(row['lock_expires_at'])}); to {what}, wait for the run to end or "
            f"stop it (`sourceflow cancel {holder} --reason …`)"
        )


# -- what the commands say --------------------------------------------------------------------


def said(result: Mapping[str, Any]) -> str:
    """A change's result as one line for people (`--json` prints the result itself)."""
    source_id, who, action = result["source_id"], result.get("changed_by"), result["action"]
    if action == "added":
        settings = result["settings"]
        return (
            f"{who} added source {source_id} ({settings['type']}), {_schedule_said(settings)}; "
            f"its first run loads {settings['backdate_days']} days"
        )
    if action in ("edited", "unchanged") and "changes" in result:
        if not result["changes"]:
            return f"{source_id}: nothing to change (its settings are already so)"
        return f"{who} changed {source_id}: " + changes_said(result["changes"])
    if action == "disabled":
        until = result["disabled_until"]
        running = result["run_under_way"]
        return (
            f"{who} disabled {source_id}"
            + (f" until {until} (the scheduler then enables it)" if until else "")
            + f": {result['reason']}"
            + (
                f"; run {running} goes on (`sourceflow cancel {running}` stops it)"
                if running
                else ""
            )
        )
    if action == "enabled":
        return f"{who} enabled {source_id} (it was disabled: {result['was_disabled_for']})"
    if action == "unchanged":
        return f"{source_id} is enabled already; nothing changed"
    return f"{who} deleted {source_id}: {result['reason']} (its history is kept)"


def changes_said(changes: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(
        f"{name} {_value_said(change['from'])} -> {_value_said(change['to'])}"
        for name, change in changes.items()
    )


def _value_said(value: Any) -> str:
    return "none" if value is None else json.dumps(value) if isinstance(value, dict) else str(value)


def _schedule_said(settings: Mapping[str, Any]) -> str:
    if settings.get("schedule_cron"):
        return f"scheduled by cron {settings['schedule_cron']!r} (UTC)"
    if settings.get("schedule_interval"):
        return f"scheduled every {settings['schedule_interval']}"
    return "run only when asked (`sourceflow run`)"
