"""What each database role may write: the one list, next to the SQL that writes.

Each service connects as its own role (`sourceflow_<service>`); people connect as themselves,
each a member of `sourceflow_operator`; a Re-specs query runs as `sourceflow_respecs`, which may
update only the tables the deployment allows. Every role may read every table. Writes are
granted per table, and per column where a table mixes what several writers own (the source row:
its settings are people's, its cursor is unlocking's, its lock the running services').

A person's decisions (approve, reject, revoke; asking for a backfill and deciding on one) are not
table writes at all: they go through the database functions of migrations 0011 and 0014, which
take the person from the session's login. A source's settings are people's to write (`sourceflow
sources …`, `sourceflow apply`); every change is recorded with the login that made it by
migration 0018's trigger, which no role can write around, except the two-person rule's own
threshold (backfill_approval_days), which stays an administrator's.
`infra/grants.py` applies this list; tests/integration/test_privileges.py connects as each role
and shows every write outside it refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

OPERATORS_ROLE = "sourceflow_operator"
RESPECS_ROLE = "sourceflow_respecs"

# The functions a person's decision goes through (migrations 0011 and 0014); only people may
# call them.
DECISION_FUNCTIONS = (
    "public.respecs_decide(text, text, text)",
    "public.respecs_revoke(text, text, text)",
    "public.backfill_request(text, text, timestamptz, timestamptz, interval, text)",
    "public.backfill_decide(bigint, text, text)",
)


def service_role(service: str) -> str:
    return f"sourceflow_{service}"


@dataclass(frozen=True)
class AllColumnsBut:
    """Every column of the table except these (resolved against the live table)."""

    columns: tuple[str, ...]


Columns = tuple[str, ...] | AllColumnsBut
ALL = AllColumnsBut(())
NONE: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableWrites:
    insert: Columns = NONE
    update: Columns = NONE
    delete: bool = False


_LOCK = ("locked_by", "locked_at", "lock_expires_at", "updated_at")
# A source's settings, as `sourceflow sources add|edit|schedule` and `sourceflow apply` write
# them (shared/rules/source_settings.py); a pause and a deletion are people's too.
_SOURCE_SETTINGS = (
    "name",
    "source_type",
    "connection",
    "backdate_days",
    "schedule_interval",
    "schedule_cron",
    "lateness_allowance",
    "overdue_after_periods",
)
_SOURCE_STATE = ("is_active", "disabled_reason", "disabled_until", "deleted_at")
# The operator's cancel request: only people write it (a trigger records who, migration 0011).
_CANCEL = ("cancel_requested_at", "cancel_requested_by", "cancel_reason")
_FAILURE_NOTE = (
    "execution_arn",
    "execution_name",
    "source_id",
    "status",
    "failed_step",
    "error",
    "error_detail",
)
# Every service writes the run ledger, a failure note included (inserted if validation never wrote).
_RUN_LEDGER = TableWrites(insert=AllColumnsBut(_CANCEL), update=AllColumnsBut(_CANCEL))
_DELIVERY_FAILURES = {"public.delivery_failure": TableWrites(insert=ALL, update=ALL)}

# A workflow run as `sourceflow workflow run` and the scheduler start it (who started it is the
# login, written by migration 0021's trigger); its end is the tasks service's.
_WORKFLOW_RUN_START = TableWrites(
    insert=("id", "workflow", "version", "variables", "execution_arn")
)

WRITES: Mapping[str, Mapping[str, TableWrites]] = {
    service_role("validation"): {
        # take_lock counts the run; a first run writes its Backdated params.
        "public.source": TableWrites(update=(*_LOCK, "runtime_count", "batch_execution_params")),
        "public.source_run": _RUN_LEDGER,
        # The request for a person's approval, and its re-issued token; never the decision.
        "public.run_approval": TableWrites(
            insert=(
                "execution_arn",
                "source_id",
                "query",
                "query_hash",
                "expires_at",
                "task_token",
            ),
            update=("task_token", "announced_at"),
        ),
        **_DELIVERY_FAILURES,
    },
    service_role("download"): {
        "public.source": TableWrites(update=("lock_expires_at",)),
        "public.source_run": _RUN_LEDGER,
        # A version an unfinished or failed run listed is taken over (record_landed).
        "public.landed_version": TableWrites(insert=ALL, update=("execution_arn",)),
        # Each part committed with where the source resumes after it.
        "public.download_checkpoint": TableWrites(insert=ALL),
        # A vendor's concurrency slots: created up to the limit, leased, renewed, released
        # (shared/store/vendor_limits.py); never the limit itself.
        "public.vendor_slot": TableWrites(
            insert=("host", "slot"),
            update=("execution_arn", "attempt", "source_id", "taken_at", "expires_at"),
        ),
        **_DELIVERY_FAILURES,
    },
    service_role("unlocking"): {
        "public.source": TableWrites(update=(*_LOCK, "last_modified_date", "landed_since")),
        "public.source_run": _RUN_LEDGER,
        # The landed versions no later window reads again.
        "public.landed_version": TableWrites(delete=True),
        **_DELIVERY_FAILURES,
    },
    service_role("scheduler"): {
        "public.source": TableWrites(
            update=("batch_execution_params", "updated_at", "last_scheduled_slot")
        ),
        "public.scheduler_tick": TableWrites(insert=ALL, update=ALL),
        # The overdue episodes it announced (migration 0019): recorded, renamed, cleared.
        "public.source_overdue": TableWrites(insert=ALL, update=ALL, delete=True),
        # The executions it starts for the slices of backfills; never the backfill itself.
        "public.backfill_slice_run": TableWrites(insert=ALL),
        # The line of runs waiting for admission: queued, a newer slot in a slot's place, admitted.
        "public.run_admission": TableWrites(
            insert=ALL,
            update=("execution_name", "started_for", "nonce", "admitted_at", "execution_arn"),
        ),
        # The scheduled workflows' slots and the runs it starts for them.
        "public.workflow": TableWrites(update=("last_scheduled_slot",)),
        "public.workflow_run": _WORKFLOW_RUN_START,
        **_DELIVERY_FAILURES,
    },
    service_role("tasks"): {
        # Each task of a workflow run (migration 0022), and the run's end (migration 0021).
        "public.workflow_task_run": TableWrites(insert=ALL, update=ALL),
        "public.workflow_run": TableWrites(update=("status", "ended_at")),
        # An ingest task asks for its child run as `sourceflow run` does (the request's login is
        # the service's, written by migration 0020's trigger), on the flow the task names.
        "public.run_request": TableWrites(insert=("execution_name", "source_id")),
        "public.source": TableWrites(update=("batch_execution_params", "updated_at")),
        **_DELIVERY_FAILURES,
    },
    OPERATORS_ROLE: {
        # `sources add|edit|schedule|disable|enable|delete`, `apply` and `flow set`; never the
        # cursor, the lock or the counts, nor backfill_approval_days (an administrator's: it is
        # the threshold of the two-person rule for backfills).
        "public.source": TableWrites(
            insert=("source_id", *_SOURCE_SETTINGS),
            update=(*_SOURCE_SETTINGS, *_SOURCE_STATE, "batch_execution_params", "updated_at"),
        ),
        # A cancel request, and why a run waiting for a person failed (reject, cancel).
        "public.source_run": TableWrites(
            insert=_FAILURE_NOTE, update=(*_CANCEL, "failed_step", "error", "error_detail")
        ),
        "public.parked_message": TableWrites(insert=ALL),
        # `sourceflow run`: the run asked for (who asked is the login, written by migration
        # 0020's trigger).
        "public.run_request": TableWrites(insert=("execution_name", "source_id")),
        # `sourceflow redrive`: which run redrove a failed one, and how (who redrove it is the
        # login, written by migration 0023's trigger).
        "public.run_redrive": TableWrites(
            insert=("failed_execution_arn", "redrive_execution_name", "how")
        ),
        # `sourceflow vendors set|unset`: a vendor's concurrency limit (who set it is the
        # login, written by migration 0017's trigger).
        "public.vendor_limit": TableWrites(
            insert=("host", "max_concurrent"), update=("max_concurrent",), delete=True
        ),
        # `sourceflow apply`'s workflows: a new version (who made it is the login, written by
        # migration 0021's trigger; a version never changes), the current one, enabled or not.
        "public.workflow_version": TableWrites(
            insert=("workflow", "version", "definition", "definition_hash", "state_machine_arn")
        ),
        # A schedule counts from when it is applied: its slot then is taken as started.
        "public.workflow": TableWrites(
            insert=(
                "name",
                "current_version",
                "schedule_interval",
                "schedule_cron",
                "last_scheduled_slot",
            ),
            update=(
                "current_version",
                "schedule_interval",
                "schedule_cron",
                "enabled",
                "updated_at",
                "last_scheduled_slot",
            ),
        ),
        # `sourceflow workflow run`.
        "public.workflow_run": _WORKFLOW_RUN_START,
    },
}


# The database functions each role may call besides: people's decisions; the scheduler resumes
# the sources paused until a time that has passed (migration 0018), holding no right to change
# is_active itself.
FUNCTIONS: Mapping[str, tuple[str, ...]] = {
    OPERATORS_ROLE: DECISION_FUNCTIONS,
    service_role("scheduler"): ("public.source_enable_due()",),
}


def respecs_writes(allowed_tables: frozenset[str]) -> Mapping[str, TableWrites]:
    """The Re-specs role's writes: UPDATE on the allowed tables, nothing else."""
    return {table: TableWrites(update=ALL) for table in sorted(allowed_tables)}
