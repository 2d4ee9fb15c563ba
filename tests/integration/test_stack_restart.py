"""A restart of the embedded stack ends the runs whose executions went with the emulator
(local/restart.py), in a database of its own: it ends every open run of the ledger."""

from __future__ import annotations

from typing import Any

from infra.migrate import apply_migrations
from local.restart import STACK_RESTARTED, end_runs_lost_with_emulator
from shared.store.db import Database

ARN = "arn:aws:states:us-east-1:123456789012:execution:sourceflow-local-run:"


def test_open_runs_end_failed_at_their_step_and_their_locks_go(empty_database_url: str) -> None:
    # Given a ledger with a run downloading, one downloaded (Unlock to come), one ended, and a
    # source locked by an execution the ledger does not know
    apply_migrations(empty_database_url)
    db = Database(empty_database_url, application_name="sourceflow-integration")
    try:
        with db.transaction() as cur:
            for source_id, holder in (
                ("downloading", "downloading-1"),
                ("downloaded", "downloaded-1"),
                ("ended", None),
                ("foreign", "unknown-1"),
            ):
                cur.execute(
                    "INSERT INTO public.source (source_id, name, source_type, locked_by,"
                    " locked_at, lock_expires_at) VALUES (%s, %s, 'http_api', %s,"
                    " CASE WHEN %s::text IS NULL THEN NULL ELSE now() END,"
                    " CASE WHEN %s::text IS NULL THEN NULL ELSE now() + interval '5 minutes' END)",
                    (source_id, source_id, holder and ARN + holder, holder, holder),
                )
            for source_id, name, status in (
                ("downloading", "downloading-1", "running"),
                ("downloaded", "downloaded-1", "downloaded"),
                ("ended", "ended-1", "succeeded"),
            ):
                cur.execute(
                    "INSERT INTO public.source_run (execution_arn, execution_name, source_id,"
                    " status, finished_at) VALUES (%s, %s, %s, %s,"
                    " CASE WHEN %s = 'succeeded' THEN now() END)",
                    (ARN + name, name, source_id, status, status),
                )

        # When the stack starts again on that database
        ended = end_runs_lost_with_emulator(empty_database_url)

        # Then the open runs ended failed, at the step their execution was in, unlocked
        assert ended == ["downloading-1", "downloaded-1"]
        runs = _runs(db)
        assert runs["downloading-1"] == ("failed", "Download", STACK_RESTARTED, True)
        assert runs["downloaded-1"] == ("failed", "Unlock", STACK_RESTARTED, True)
        # And the run that had ended, and the lock of an execution not in the ledger, stand
        assert runs["ended-1"] == ("succeeded", None, None, True)
        assert _locks(db) == {"foreign": ARN + "unknown-1"}
        # And a second start finds nothing left to end
        assert end_runs_lost_with_emulator(empty_database_url) == []
    finally:
        db.close()


def _runs(db: Database) -> dict[str, tuple[Any, ...]]:
    with db.transaction() as cur:
        cur.execute(
            "SELECT execution_name, status, failed_step, error,"
            " finished_at IS NOT NULL AS finished FROM public.source_run"
        )
        return {
            row["execution_name"]: (
                row["status"],
                row["failed_step"],
                row["error"],
                row["finished"],
            )
            for row in cur.fetchall()
        }


def _locks(db: Database) -> dict[str, str]:
    with db.transaction() as cur:
        cur.execute("SELECT source_id, locked_by FROM public.source WHERE locked_by IS NOT NULL")
        return {row["source_id"]: row["locked_by"] for row in cur.fetchall()}


def test_workflow_runs_under_way_end_failed_with_their_waiting_tasks(
    empty_database_url: str,
) -> None:
    # Given a workflow run whose ingest task waits for its child run, and one that ended
    apply_migrations(empty_database_url)
    db = Database(empty_database_url, application_name="sourceflow-integration")
    try:
        with db.transaction() as cur:
            cur.execute(
                "INSERT INTO public.workflow_version (workflow, version, definition,"
                " definition_hash, state_machine_arn) VALUES ('w', 1, '{}', 'h', 'arn:m')"
            )
            for run_id, done in (("w-v1-open", False), ("w-v1-done", True)):
                cur.execute(
                    "INSERT INTO public.workflow_run (id, workflow, version, execution_arn,"
                    " status, ended_at) VALUES (%s, 'w', 1, %s, %s,"
                    " CASE WHEN %s THEN now() END)",
                    (run_id, ARN + run_id, "succeeded" if done else "running", done),
                )
            cur.execute(
                "INSERT INTO public.workflow_task_run (workflow_run_id, task, kind,"
                " child_run_id) VALUES ('w-v1-open', 'load', 'ingest', 'child-1')"
            )

        # When the stack starts again on that database
        ended = end_runs_lost_with_emulator(empty_database_url)

        # Then the open workflow run and its waiting task ended failed; the other stands
        assert ended == ["w-v1-open"]
        with db.transaction() as cur:
            cur.execute("SELECT id, status FROM public.workflow_run ORDER BY id")
            assert [tuple(row.values()) for row in cur.fetchall()] == [
                ("w-v1-done", "succeeded"),
                ("w-v1-open", "failed"),
            ]
            cur.execute("SELECT status, error FROM public.workflow_task_run")
            task = cur.fetchone()
        assert task["status"] == "failed" and task["error"].startswith(STACK_RESTARTED)
    finally:
        db.close()
