"""`sourceflow demo`: real sources of every type through the real state machine on the
embedded stack (the vendor's API, a partner's CSV drops in S3, a partner's PostgreSQL table).

Round 1 is each source's first run (backdated, Full Load). Then every source changes some
records, the scheduler puts the sources back to Normal, and round 2 loads exactly what changed.
Round 3 runs each source in its special flow (Re-specs or Sold), which the scheduler resets;
the Re-specs query waits until a second person approves it, as every new query does.
Last, the campaign workflow (local/demo_workflows.yaml) runs after ingestion: on the day a
campaign starts, two of the sources load at once, then the warehouse's SQL runs in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from infra.resources import SERVICES, Names
from local.demo_sources import DEMO_SOURCES, DemoSource, SourceData, source_data
from local.roles import DEMO_PEOPLE
from local.stack import LocalStack, StackOptions, aws_client
from local.ticker import fire_all
from ops import approvals
from ops.cli import APPROVAL_COLUMNS
from ops.config import read_env_file
from ops.output import rows_table, terminal_width, to_json
from ops.runs import wait_for_execution
from shared.rules.flows import (
    RESPECS_WINDOW_START,
    FlowParams,
    FlowType,
    WindowField,
    parse_flow_params,
)
from shared.runtime.executions import start_run
from shared.runtime.tasks import TaskCallbacks
from shared.store.db import Database, fetch_one
from shared.store.ledger import set_flow_params
from shared.store.runs import RunStatus
from shared.store.sources import SourceSpec, get_run, register_source
from shared.timefmt import readable

# Narration is not wrapped (the terminal wraps it; a pipe keeps each line whole); tables fit.
console = Console(width=terminal_width(), soft_wrap=True)


NORMAL_PARAMS = FlowParams(FlowType.NORMAL).canonical()
DEMO_WORKFLOWS = Path(__file__).resolve().parent / "demo_workflows.yaml"
DEMO_CAMPAIGN_ID = 2026
# What the campaign workflow's tasks end as when a campaign starts today and all goes well.
CAMPAIGN_RAN = {
    "check_campaign": "succeeded",
    "ingest_listings": "succeeded",
    "ingest_partner": "succeeded",
    "publish_campaign": "succeeded",
    "warm_caches": "succeeded",
    "announce": "succeeded",
    "mark_failed": "skipped",
    "aggregate_metrics": "succeeded",
}
DEMO_ATTRIBUTE_ROWS = 3  # listing attribute rows per source, for the Re-specs query to update
SOURCE_TYPE_OF = {source.source_id: source.source_type for source in DEMO_SOURCES}
# The data engineer who asks for the Re-specs query, and the colleague who approves it: each
# acts through their own login, as `SOURCEFLOW_CREDENTIALS=<state dir>/people/NAME.env sourceflow`.
REQUESTER, APPROVER = DEMO_PEOPLE


def run_demo(state_dir: Path, database_url: str | None = None, *, as_json: bool = False) -> int:
    """Play the demo; exit status 1 if a check failed. `as_json`: the narration goes to stderr
    and stdout gets one JSON document, the runs and the failed checks."""
    console.stderr = as_json
    started = time.monotonic()
    console.print("[bold]sourceflow demo[/bold] - starting the embedded stack…")
    # The demo fires the schedule rules itself, at the moments it narrates.
    options = StackOptions(state_dir=state_dir, database_url=database_url, ticker=False)
    with LocalStack(options) as stack:
        env = stack.env
        console.print(
            f"stack up in {time.monotonic() - started:.1f}s: PostgreSQL, moto "
            f"({env['AWS_ENDPOINT_URL']}), vendor ({env['VENDOR_URL']}), partner database and "
            f"drops (s3://{env['DROPS_BUCKET']}), {len(SERVICES)} services"
        )
        db = Database(env["DATABASE_URL"], application_name="sourceflow-demo")
        people = {
            person: Database(
                read_env_file(path)["DATABASE_URL"], application_name=f"sourceflow-demo-{person}"
            )
            for person, path in stack.people.items()
        }
        s3, secretsmanager = aws_client(env, "s3"), aws_client(env, "secretsmanager")
        data = {
            source.source_id: source_data(source, env, s3, secretsmanager)
            for source in DEMO_SOURCES
        }
        demo = _Demo(db, people, aws_client(env, "stepfunctions"), env, data, state_dir)
        try:
            failed_checks = demo.play()
        finally:
            for connection in (db, *people.values()):
                connection.close()
        if as_json:
            print(to_json({"runs": demo.runs, "failed_checks": failed_checks}))
        console.print(run_table("All four flows", demo.runs))
        for check in failed_checks:
            console.print(f"[bold red]check failed:[/bold red] {check}")
        console.print(
            f"[bold]{'UNEXPECTED RESULT' if failed_checks else 'OK'}[/bold] - raw data in "
            f"s3://{env['RAW_BUCKET']}/<source>/<run>/ - demo took "
            f"{time.monotonic() - started:.1f}s"
        )
        return 1 if failed_checks else 0


@dataclass
class _Demo:
    db: Database  # the stack's administrator: registers the sources
    people: dict[str, Database]  # each person's own login
    sfn: Any
    env: dict[str, str]
    data: dict[str, SourceData]  # by source id
    state_dir: Path  # the operator's command reaches the stack through it
    runs: list[dict[str, Any]] = field(default_factory=list)
    approved: list[str] = field(default_factory=list)  # sources whose query bob approved

    def play(self) -> list[str]:
        """Three rounds; returns the checks that failed (none when every run did exactly what
        its flow promises), each said so that the printout shows what went wrong."""
        for source in DEMO_SOURCES:
            self.reset(source)
        first = self.round("Round 1: first runs (backdated Full Load)")

        for source in DEMO_SOURCES:
            self.data[source.source_id].change(source.changed, source.added)
        console.print(
            "sources: the vendor, the partner's drops and the partner's table changed records"
        )
        reset_after_first = self.tick_until_normal()
        second = self.round("Round 2: incremental Normal runs")

        sold_year = datetime.now(UTC).year - 1
        for source in DEMO_SOURCES:
            self.set_special_flow(source, sold_year)
        third = self.round("Round 3: Re-specs and Sold", approve=True)
        reset_after_third = self.tick_until_normal()
        campaign = self.campaign_workflow()

        respecs_sources = {s.source_id for s in DEMO_SOURCES if s.special_flow is FlowType.RESPECS}
        checks = {
            "every run succeeded": all(
                run.get("status") == RunStatus.SUCCEEDED for run in self.runs
            ),
            "the first runs were Full Loads": all(run["flow_type"] == "full_load" for run in first),
            "the Normal runs loaded exactly the changed and added records": (
                [run["records"] for run in second] == [s.changed + s.added for s in DEMO_SOURCES]
            ),
            "each Re-specs and Sold run loaded its window and kept its promise": all(
                self.did_special_flow(source, run, before)
                for source, run, before in zip(DEMO_SOURCES, third, second, strict=True)
            ),
            "the scheduler reset the Full Loads to Normal": reset_after_first,
            "the scheduler reset Re-specs and Sold to Normal": reset_after_third,
            # The approvals are listed oldest first; runs started together may come in any order.
            "bob approved each Re-specs query once": (
                sorted(self.approved) == sorted(respecs_sources)
            ),
            "the campaign workflow loaded both sources, then ran its SQL in order": (
                campaign == CAMPAIGN_RAN
            ),
        }
        return [name for name, passed in checks.items() if not passed]

    def reset(self, source: DemoSource) -> None:
        """Each demo starts its sources afresh: never run, no cursor, no history."""
        with self.db.transaction() as cur:
            # A query approved in an earlier demo would not ask again: forget it.
            for table in ("run_approval", "respecs_approval"):
                cur.execute(f"DELETE FROM public.{table} WHERE source_id = %s", (source.source_id,))
            cur.execute("DELETE FROM public.source_run WHERE source_id = %s", (source.source_id,))
            cur.execute(
                "DELETE FROM public.source_flow_history WHERE source_id = %s", (source.source_id,)
            )
            cur.execute("DELETE FROM public.source WHERE source_id = %s", (source.source_id,))
        with self.db.transaction() as cur:
            cur.execute(
                "DELETE FROM public.listing_attributes WHERE source_id = %s", (source.source_id,)
            )
            for index in range(DEMO_ATTRIBUTE_ROWS):
                cur.execute(
                    "INSERT INTO public.listing_attributes (source_id, listing_id, attribute,"
                    " value) VALUES (%s, %s, 'area_unit', 'sqft')",
                    (source.source_id, f"{source.name}-{index:07d}"),
                )
        data = self.data[source.source_id]
        data.reset()
        register_source(
            self.db,
            SourceSpec(
                source_id=source.source_id,
                name=f"Demo {source.source_type} source {source.name}",
                source_type=source.source_type,
                connection=data.connection(),
                backdate_days=source.backdate_days,
            ),
        )

    def set_special_flow(self, source: DemoSource, sold_year: int) -> None:
        if source.special_flow is FlowType.RESPECS:
            sql = (
                "UPDATE public.listing_attributes SET value = 'sqm', updated_at = now()"
                f" WHERE source_id = '{source.source_id}' AND attribute = 'area_unit'"
            )
            params, reason = FlowParams(FlowType.RESPECS, sql=sql), "area unit is now sqm"
        else:
            params, reason = FlowParams(FlowType.SOLD, year=sold_year), f"sales since {sold_year}"
        with self.people[REQUESTER].transaction() as cur:
            set_flow_params(cur, source.source_id, params.canonical(), reason=reason)
        console.print(
            f"{REQUESTER}: {source.source_id} → {params.canonical()['flow_type']} ({reason})"
        )

    def did_special_flow(
        self, source: DemoSource, run: dict[str, Any], before: dict[str, Any]
    ) -> bool:
        """Re-specs reloads everything since 1990 and updates the attribute rows; Sold loads
        the sales since 1 January and keeps the cursor where the Normal run left it."""
        data = self.data[source.source_id]
        if source.special_flow is FlowType.RESPECS:
            expected = data.count(
                WindowField.LAST_MODIFIED, RESPECS_WINDOW_START, run["window_end"]
            )
            return run["records"] == expected and run["respecs_rows"] == DEMO_ATTRIBUTE_ROWS
        expected = data.count(WindowField.SOLD_DATE, run["window_start"], run["window_end"])
        return run["records"] == expected and run["cursor_after"] == before["cursor_after"]

    def round(self, title: str, *, approve: bool = False) -> list[dict[str, Any]]:
        state_machine_arn = self.env["STATE_MACHINE_ARN"]
        arns = [start_run(self.sfn, state_machine_arn, s.source_id) for s in DEMO_SOURCES]
        with ThreadPoolExecutor(len(arns)) as pool:
            ending = [pool.submit(wait_for_execution, self.sfn, arn) for arn in arns]
            if approve:
                self.approve_waiting(set(arns))
            for end in ending:
                end.result()
        runs = [get_run(self.db, arn) or {} for arn in arns]
        console.print(run_table(title, runs))
        self.runs.extend(runs)
        return runs

    def approve_waiting(self, arns: set[str], timeout: float = 30.0) -> None:
        """Be the second person: list the runs waiting for approval (`sourceflow approvals`)
        and approve each (`sourceflow approve RUN`)."""
        expected = sum(s.special_flow is FlowType.RESPECS for s in DEMO_SOURCES)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            waiting = [w for w in approvals.list_waiting(self.db) if w["execution_arn"] in arns]
            if len(waiting) == expected:
                break
            time.sleep(0.2)
        console.print(
            rows_table("Waiting for approval (sourceflow approvals)", waiting, APPROVAL_COLUMNS)
        )
        callbacks = TaskCallbacks(self.sfn)
        for approval in waiting:
            approvals.approve(self.people[APPROVER], callbacks, approval["execution_name"])
            self.approved.append(approval["source_id"])
            console.print(
                f"{APPROVER}: approved the Re-specs query of {approval['source_id']} "
                f"(asked by {approval['requested_by']}); the run goes on"
            )

    def tick_until_normal(self, timeout: float = 30.0) -> bool:
        """Fire the schedule rules (as EventBridge does every minute) until the scheduler has
        put every demo source back to Normal; print what the flow history says."""
        events, sqs = aws_client(self.env, "events"), aws_client(self.env, "sqs")
        prefix = Names(self.env["SOURCEFLOW_STAGE"]).prefix
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fire_all(events, sqs, prefix)
            time.sleep(1.0)
            changes = [self.last_flow_change(s.source_id) for s in DEMO_SOURCES]
            done = [c for c in changes if c is not None and c["to_params"] == NORMAL_PARAMS]
            if len(done) == len(DEMO_SOURCES):
                for change in done:
                    before = parse_flow_params(change["source_id"], change["from_params"])
                    console.print(
                        f"scheduler: {change['source_id']} {before.canonical()['flow_type']} → "
                        f"Normal ({change['reason']}; flow history #{change['change_id']})"
                    )
                return True
        console.print("[bold red]the scheduler did not reset the demo sources[/bold red]")
        return False

    def campaign_workflow(self, timeout: float = 120.0) -> dict[str, str | None]:
        """Apply the campaign workflow, make a campaign start today and run the workflow, as an
        operator does (`sourceflow apply`, `workflow run`, `workflow show`); returns each
        task's status."""
        with self.db.transaction() as cur:
            # Today's campaign, the only one scheduled to start today.
            cur.execute("UPDATE public.campaign SET status = 'done' WHERE status = 'scheduled'")
            cur.execute(
                """
                INSERT INTO public.campaign (campaign_id, name, starts_on, ends_on, status)
                VALUES (%s, 'winter sale', current_date, current_date + 14, 'scheduled')
                ON CONFLICT (campaign_id) DO UPDATE
                   SET starts_on = EXCLUDED.starts_on, ends_on = EXCLUDED.ends_on,
                       status = EXCLUDED.status, listings = NULL
                """,
                (DEMO_CAMPAIGN_ID,),
            )
        console.print(f"warehouse: campaign {DEMO_CAMPAIGN_ID} starts today")
        console.print(self.sourceflow("apply", str(DEMO_WORKFLOWS)).strip())
        run_id = json.loads(self.sourceflow("workflow", "run", "campaign", "--json"))["run"]
        console.print(f"alice: sourceflow workflow run campaign → run {run_id}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.db.transaction() as cur:
                ended = fetch_one(
                    cur, "SELECT ended_at FROM public.workflow_run WHERE id = %s", (run_id,)
                )
            if ended and ended["ended_at"]:
                break
            time.sleep(0.5)
        shown = json.loads(self.sourceflow("workflow", "show", run_id, "--json", check=False))
        console.print(
            rows_table(
                f"Workflow run {run_id}: {shown['run']['status']}",
                shown["tasks"],
                ["task", "kind", "status", "error"],
            )
        )
        return {task["task"]: task["status"] for task in shown["tasks"]}

    def sourceflow(self, *args: str, check: bool = True) -> str:
        """The operator's command against the demo's stack; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "ops.cli", *args, "--state-dir", str(self.state_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"sourceflow {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def last_flow_change(self, source_id: str) -> dict[str, Any] | None:
        with self.db.transaction() as cur:
            return fetch_one(
                cur,
                "SELECT * FROM public.source_flow_history WHERE source_id = %s"
                " ORDER BY change_id DESC LIMIT 1",
                (source_id,),
            )


def run_table(title: str, runs: list[dict[str, Any]]) -> Any:
    """The demo's runs, as every listing of `sourceflow` prints (fitting the terminal)."""
    rows = [
        {
            "source": run.get("source_id", "?"),
            "type": SOURCE_TYPE_OF.get(run.get("source_id", ""), "?"),
            "flow": run.get("flow_type") or "-",
            "filter field": run.get("window_field") or "-",
            "window": _window(run),
            "records": _number(run.get("records")),
            "re-spec'd rows": _number(run.get("respecs_rows")),
            "cursor before → after": (
                f"{_stamp(run.get('cursor_before'))} → {_stamp(run.get('cursor_after'))}"
            ),
            "status": run.get("status", "?") + (f" ({run['error']})" if run.get("error") else ""),
            "duration": _duration(run),
        }
        for run in runs
    ]
    return rows_table(title, rows, list(rows[0]) if rows else ["source"], counted=False)


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


def _window(run: dict[str, Any]) -> str:
    if run.get("window_start") is None:
        return "-"
    opening = "[" if run["window_start_inclusive"] else "("
    return f"{opening}{_stamp(run['window_start'])}, {_stamp(run['window_end'])}]"


def _stamp(value: Any) -> str:
    return readable(value) if value is not None else "none"


def _duration(run: dict[str, Any]) -> str:
    if run.get("finished_at") is None or run.get("started_at") is None:
        return "-"
    return f"{(run['finished_at'] - run['started_at']).total_seconds():.2f}s"
