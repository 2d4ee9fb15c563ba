"""`sourceflow demo`: real sources through the real state machine on the embedded stack.

Round 1 is each source's first run (backdated, Full Load). Then the vendor changes some
records, the sources go back to Normal, and round 2 loads exactly what changed.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.table import Table

from infra.local.stack import LocalStack, StackOptions, aws_client
from infra.local.ticker import fire_all
from infra.resources import Names
from infra.runs import wait_for_execution
from infra.sources import SourceSpec, get_run, register_source
from shared.db import Database
from shared.flows import FlowParams, FlowType, parse_flow_params
from shared.ledger import set_flow_params
from shared.runs import start_run
from shared.timefmt import isoformat

# Piped output (make demo | tee) has no width; give the run tables room instead of 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)


@dataclass(frozen=True)
class DemoSource:
    source_id: str
    dataset: str
    backdate_days: int
    changed: int  # records the vendor modifies between the rounds
    added: int  # records the vendor adds between the rounds


NORMAL_PARAMS = FlowParams(FlowType.NORMAL).canonical()
DEMO_ATTRIBUTE_ROWS = 3  # listing attribute rows per source, for the Re-specs query to update
DEMO_SOURCES = (
    DemoSource("demo-listings-a", "listings-a", backdate_days=30, changed=40, added=10),
    DemoSource("demo-listings-b", "listings-b", backdate_days=7, changed=5, added=0),
)


def run_demo(state_dir: Path, database_url: str | None = None) -> int:
    started = time.monotonic()
    console.print("[bold]sourceflow demo[/bold] - starting the embedded stack…")
    # The demo fires the schedule rules itself, at the moments it narrates.
    options = StackOptions(state_dir=state_dir, database_url=database_url, ticker=False)
    with LocalStack(options) as stack:
        env = stack.env
        console.print(
            f"stack up in {time.monotonic() - started:.1f}s: PostgreSQL, moto "
            f"({env['AWS_ENDPOINT_URL']}), vendor ({env['VENDOR_URL']}), 4 services"
        )
        db = Database(env["DATABASE_URL"], application_name="sourceflow-demo")
        demo = _Demo(db, aws_client(env, "stepfunctions"), env)
        try:
            ok = demo.play()
        finally:
            db.close()
        console.print(run_table("All four flows", demo.runs))
        console.print(
            f"[bold]{'OK' if ok else 'UNEXPECTED RESULT'}[/bold] - raw data in "
            f"s3://{env['RAW_BUCKET']}/<source>/<run>/ - demo took "
            f"{time.monotonic() - started:.1f}s"
        )
        return 0 if ok else 1


@dataclass
class _Demo:
    db: Database
    sfn: Any
    env: dict[str, str]
    runs: list[dict[str, Any]] = field(default_factory=list)

    def play(self) -> bool:
        """Three rounds; returns whether every run did exactly what its flow promises."""
        a, b = DEMO_SOURCES
        vendor = self.env["VENDOR_URL"]
        for source in DEMO_SOURCES:
            _reset_demo_source(self.db, source, vendor)
        first = self.round("Round 1: first runs (backdated Full Load)")

        for source in DEMO_SOURCES:
            _vendor_changes(vendor, source)
        console.print("vendor: modified and added records")
        reset_after_first = self.tick_until_normal()
        second = self.round("Round 2: incremental Normal runs")

        sold_year = datetime.now(UTC).year - 1
        respecs_sql = (
            "UPDATE public.listing_attributes SET value = 'sqm', updated_at = now()"
            f" WHERE source_id = '{a.source_id}' AND attribute = 'area_unit'"
        )
        self.set_flow(a, FlowParams(FlowType.RESPECS, sql=respecs_sql), "area unit is now sqm")
        self.set_flow(b, FlowParams(FlowType.SOLD, year=sold_year), f"sales since {sold_year}")
        console.print(
            f"operator: {a.source_id} → Re-specs (area unit → sqm), "
            f"{b.source_id} → Sold since {sold_year}"
        )
        third = self.round("Round 3: Re-specs and Sold")
        reset_after_third = self.tick_until_normal()

        cursor_kept = third[1]["cursor_after"] == second[1]["cursor_after"]
        return (
            all(run.get("status") == "succeeded" for run in self.runs)
            and [run["flow_type"] for run in first] == ["full_load", "full_load"]
            and [run["records"] for run in second] == [s.changed + s.added for s in DEMO_SOURCES]
            and third[0]["records"] == _vendor_count(vendor, a.dataset, {})
            and third[0]["respecs_rows"] == DEMO_ATTRIBUTE_ROWS
            and third[1]["records"]
            == _vendor_count(
                vendor,
                b.dataset,
                {"sold_from": f"{sold_year}-01-01T00:00:00Z", "sold_until": third[1]["window_end"]},
            )
            and cursor_kept
            and reset_after_first
            and reset_after_third
        )

    def round(self, title: str) -> list[dict[str, Any]]:
        state_machine_arn = self.env["STATE_MACHINE_ARN"]
        arns = [start_run(self.sfn, state_machine_arn, s.source_id) for s in DEMO_SOURCES]
        with ThreadPoolExecutor(len(arns)) as pool:
            list(pool.map(lambda arn: wait_for_execution(self.sfn, arn), arns))
        runs = [get_run(self.db, arn) or {} for arn in arns]
        console.print(run_table(title, runs))
        self.runs.extend(runs)
        return runs

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

    def last_flow_change(self, source_id: str) -> dict[str, Any] | None:
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT * FROM public.source_flow_history WHERE source_id = %s"
                " ORDER BY change_id DESC LIMIT 1",
                (source_id,),
            )
            row = cur.fetchone()
        return dict(row) if row else None

    def set_flow(self, source: DemoSource, params: FlowParams, reason: str) -> None:
        with self.db.transaction() as cur:
            set_flow_params(
                cur, source.source_id, params.canonical(), changed_by="demo", reason=reason
            )


def run_table(title: str, runs: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in (
        "source",
        "flow",
        "filter field",
        "window",
        "records",
        "re-spec'd rows",
        "cursor before → after",
        "status",
        "duration",
    ):
        numeric = column in ("records", "re-spec'd rows", "duration")
        table.add_column(column, justify="right" if numeric else "left")
    for run in runs:
        table.add_row(
            run.get("source_id", "?"),
            run.get("flow_type") or "-",
            run.get("window_field") or "-",
            _window(run),
            _number(run.get("records")),
            _number(run.get("respecs_rows")),
            f"{_stamp(run.get('cursor_before'))} → {_stamp(run.get('cursor_after'))}",
            run.get("status", "?") + (f" ({run['error']})" if run.get("error") else ""),
            _duration(run),
        )
    return table


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


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
    with db.transaction() as cur:
        cur.execute(
            "DELETE FROM public.listing_attributes WHERE source_id = %s", (source.source_id,)
        )
        for index in range(DEMO_ATTRIBUTE_ROWS):
            cur.execute(
                "INSERT INTO public.listing_attributes (source_id, listing_id, attribute, value)"
                " VALUES (%s, %s, 'area_unit', 'sqft')",
                (source.source_id, f"{source.dataset}-{index:07d}"),
            )
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


def _vendor_count(vendor_url: str, dataset: str, filters: dict[str, Any]) -> int:
    params = {k: isoformat(v) if isinstance(v, datetime) else v for k, v in filters.items()}
    response = requests.get(f"{vendor_url}/datasets/{dataset}/count", params=params, timeout=10)
    response.raise_for_status()
    return int(response.json()["count"])


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
