"""`sourceflow demo`: real sources through the real state machine on the embedded stack.

Round 1 is each source's first run (backdated, Full Load). Then the vendor changes some
records, the sources go back to Normal, and round 2 loads exactly what changed.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.table import Table

from infra.local.stack import LocalStack, StackOptions, aws_client
from infra.runs import wait_for_execution
from infra.sources import SourceSpec, get_run, register_source
from shared.db import Database
from shared.flows import FlowParams, FlowType
from shared.ledger import set_flow_params
from shared.runs import start_run
from shared.timefmt import isoformat

# Piped output (make demo | tee) has no width; give the run tables room instead of 80 columns.
console = Console(width=None if sys.stdout.isatty() else 170)


@dataclass(frozen=True)
class DemoSource:
    source_id: str
    dataset: str
    backdate_days: int
    changed: int  # records the vendor modifies between the rounds
    added: int  # records the vendor adds between the rounds


DEMO_SOURCES = (
    DemoSource("demo-listings-a", "listings-a", backdate_days=30, changed=40, added=10),
    DemoSource("demo-listings-b", "listings-b", backdate_days=7, changed=5, added=0),
)


def run_demo(state_dir: Path, database_url: str | None = None) -> int:
    started = time.monotonic()
    console.print("[bold]sourceflow demo[/bold] - starting the embedded stack…")
    with LocalStack(StackOptions(state_dir=state_dir, database_url=database_url)) as stack:
        env = stack.env
        console.print(
            f"stack up in {time.monotonic() - started:.1f}s: PostgreSQL, moto "
            f"({env['AWS_ENDPOINT_URL']}), vendor ({env['VENDOR_URL']}), 3 services"
        )
        db = Database(env["DATABASE_URL"], application_name="sourceflow-demo")
        sfn = aws_client(env, "stepfunctions")
        for source in DEMO_SOURCES:
            _reset_demo_source(db, source, env["VENDOR_URL"])

        first = _round(sfn, db, env["STATE_MACHINE_ARN"], "Round 1: first runs (backdated)")
        for source in DEMO_SOURCES:
            _vendor_changes(env["VENDOR_URL"], source)
            with db.transaction() as cur:
                set_flow_params(
                    cur,
                    source.source_id,
                    FlowParams(FlowType.NORMAL).canonical(),
                    changed_by="demo",
                    reason="first run done; back to Normal",
                )
        console.print(
            "vendor modified/added records; flows set back to Normal "
            "(the scheduler will do this by itself)"
        )
        second = _round(sfn, db, env["STATE_MACHINE_ARN"], "Round 2: incremental Normal runs")

        ok = all(run["status"] == "succeeded" for run in first + second) and all(
            run["records"] == source.changed + source.added
            for run, source in zip(second, DEMO_SOURCES, strict=True)
        )
        console.print(
            f"[bold]{'OK' if ok else 'UNEXPECTED RESULT'}[/bold] - round 2 loaded exactly the "
            f"records the vendor changed; raw data in s3://{env['RAW_BUCKET']}/<source>/<run>/ "
            f"- demo took {time.monotonic() - started:.1f}s"
        )
        db.close()
        return 0 if ok else 1


def _round(sfn: Any, db: Database, state_machine_arn: str, title: str) -> list[dict[str, Any]]:
    arns = [start_run(sfn, state_machine_arn, source.source_id) for source in DEMO_SOURCES]
    with ThreadPoolExecutor(len(arns)) as pool:
        list(pool.map(lambda arn: wait_for_execution(sfn, arn), arns))
    runs = [get_run(db, arn) or {} for arn in arns]
    console.print(run_table(title, runs))
    return runs


def run_table(title: str, runs: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in (
        "source",
        "flow",
        "filter field",
        "window",
        "records",
        "cursor before → after",
        "status",
        "duration",
    ):
        table.add_column(column, justify="right" if column in ("records", "duration") else "left")
    for run in runs:
        table.add_row(
            run.get("source_id", "?"),
            run.get("flow_type") or "-",
            run.get("window_field") or "-",
            _window(run),
            str(run.get("records") if run.get("records") is not None else "-"),
            f"{_stamp(run.get('cursor_before'))} → {_stamp(run.get('cursor_after'))}",
            run.get("status", "?") + (f" ({run['error']})" if run.get("error") else ""),
            _duration(run),
        )
    return table


def _window(run: dict[str, Any]) -> str:
    if run.get("window_start") is None:
        return "-"
    opening = "[" if run["window_start_inclusive"] else "("
    return f"{opening}{_stamp(run['window_start'])}, {_stamp(run['window_end'])}]"


def _stamp(value: Any) -> str:
    return isoformat(value)[:19].replace("T", " ") if value is not None else "none"


def _duration(run: dict[str, Any]) -> str:
    if run.get("finished_at") is None or run.get("started_at") is None:
        return "-"
    return f"{(run['finished_at'] - run['started_at']).total_seconds():.2f}s"


def _reset_demo_source(db: Database, source: DemoSource, vendor_url: str) -> None:
    """Each demo starts its sources afresh: never run, no cursor, no history."""
    with db.transaction() as cur:
        cur.execute("DELETE FROM public.source_run WHERE source_id = %s", (source.source_id,))
        cur.execute(
            "DELETE FROM public.source_flow_history WHERE source_id = %s", (source.source_id,)
        )
        cur.execute("DELETE FROM public.source WHERE source_id = %s", (source.source_id,))
    register_source(
        db,
        SourceSpec(
            source_id=source.source_id,
            name=f"Demo vendor {source.dataset}",
            source_type="http_api",
            connection={"base_url": vendor_url, "dataset": source.dataset},
            backdate_days=source.backdate_days,
        ),
    )


def _vendor_changes(vendor_url: str, source: DemoSource) -> None:
    """Modify some existing records (a price change) and add new ones at the vendor."""
    page = requests.get(
        f"{vendor_url}/datasets/{source.dataset}/records",
        params={"page_size": source.changed},
        timeout=10,
    )
    page.raise_for_status()
    changed = [
        {"id": record["id"], "price": int(record["price"]) + 1000}
        for record in page.json()["records"]
    ]
    added = [{"id": f"{source.dataset}-new-{index:04d}"} for index in range(source.added)]
    requests.post(
        f"{vendor_url}/datasets/{source.dataset}/records",
        json={"records": changed + added},
        timeout=10,
    ).raise_for_status()
