"""What the lateness allowance costs a Normal run with nothing new: it re-reads the overlap before
its cursor from the source and skips the versions already landed.

A vendor dataset holds N records stamped over the 12 minutes before the cursor (the default
allowance plus the clock-skew allowance), and nothing after it. Three sources read it, each
after a first run that landed those records (so that `landed_since` lets the overlap apply):
- `default`: the default lateness allowance, 10 min (+ 2 min skew): re-reads all N;
- `none`: `lateness_allowance = interval '0'`; the window still overlaps by the skew allowance;
- `at_cursor`: `landed_since` at the cursor, so the window starts there: no overlap at all, what
  a run cost before the allowance.
Each runs with nothing new, through the whole state machine and through the services' logic
called directly, interleaved (one run of each in turn) so that the machine's load falls on all
alike; the records it re-read and skipped come from the ledger (`duplicates_skipped`).
"""

from __future__ import annotations

import os
import statistics
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests

from bench.common import bench_source, direct_run, task_request, utc_now
from bench.orchestration import step_seconds
from local.stack import LocalStack, aws_client
from local.vendor.records import floor_seconds, format_timestamp, render_record
from ops.runs import wait_for_execution
from shared.rules.flows import DEFAULT_LATENESS_ALLOWANCE, overlap
from shared.runtime.executions import start_run
from shared.store.db import Database, fetch_one

SIZES = (0, 1_000, 10_000)
RUNS = 15
WARM_UP = 2
UPSERT_BATCH = 2_000
# The records sit in the default overlap before the cursor, the newest at the cursor.
SPAN = overlap(DEFAULT_LATENESS_ALLOWANCE)


@dataclass(frozen=True)
class Setting:
    name: str
    lateness_allowance: timedelta
    window_at_cursor: bool = False


Key = tuple[int, str]  # (records in the overlap, setting)
SETTINGS = (
    Setting("default", DEFAULT_LATENESS_ALLOWANCE),
    Setting("none", timedelta(0)),
    Setting("at_cursor", DEFAULT_LATENESS_ALLOWANCE, window_at_cursor=True),
)


def measure_overlap(
    stack: LocalStack, sizes: tuple[int, ...] = SIZES, runs: int = RUNS
) -> dict[str, Any]:
    env = stack.env
    # The services' logic in this process reaches the stack's AWS as the workers do.
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    db = Database(env["DATABASE_URL"], application_name="sourceflow-bench")
    cursor = utc_now().replace(microsecond=0) - timedelta(seconds=5)
    sources: dict[Key, str] = {}
    for size in sizes:
        dataset = f"overlap-{uuid.uuid4().hex[:8]}-{size}"
        _fill(env["VENDOR_URL"], dataset, size, cursor)
        for setting in SETTINGS:
            sources[size, setting.name] = _prepared_source(db, env, dataset, setting, cursor)

    sfn = aws_client(env, "stepfunctions")

    def through_machine(source_id: str) -> dict[str, Any]:
        arn = start_run(sfn, env["STATE_MACHINE_ARN"], source_id)
        described = wait_for_execution(sfn, arn)
        assert described["status"] == "SUCCEEDED", described
        events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        return {
            "s": (described["stopDate"] - described["startDate"]).total_seconds(),
            "download_s": step_seconds(events)["Download"],
            **_ledger(db, arn),
        }

    def direct(source_id: str) -> dict[str, Any]:
        request = task_request(source_id)
        timings = direct_run(db, request, bucket=env["RAW_BUCKET"])
        return {
            "s": sum(timings.values()),
            "download_s": timings["Download"],
            **_ledger(db, request["execution_arn"]),
        }

    machine = _interleaved(sources, through_machine, runs)
    logic = _interleaved(sources, direct, runs)
    db.close()

    results: dict[str, Any] = {"runs": runs, "records_stamped_before_cursor_s": SPAN.seconds}
    for size in sizes:
        by_setting = {
            setting.name: _summary(machine[size, setting.name], logic[size, setting.name])
            for setting in SETTINGS
        }
        results[str(size)] = {
            **by_setting,
            "ratio_default_to_none": _ratios(by_setting["default"], by_setting["none"]),
            "ratio_none_to_at_cursor": _ratios(by_setting["none"], by_setting["at_cursor"]),
            "direct_download_us_per_record_re_read": _per_record(
                by_setting["default"], by_setting["at_cursor"]
            ),
        }
        ratio = results[str(size)]["ratio_default_to_none"]["state_machine_s"]
        print(f"  {size} records: default/none {ratio:.2f} per run", flush=True)
    return results


def _interleaved(
    sources: dict[Key, str], run: Callable[[str], dict[str, Any]], runs: int
) -> dict[Key, list[dict[str, Any]]]:
    """`runs` runs of every source, one of each in turn, after WARM_UP rounds left out."""
    figures: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for index in range(WARM_UP + runs):
        for key, source_id in sources.items():
            measured = run(source_id)
            if index >= WARM_UP:
                figures[key].append(measured)
    return figures


def _fill(vendor_url: str, dataset: str, size: int, cursor: datetime) -> None:
    """`size` listings (the vendor's own, at their full size) stamped evenly over SPAN before
    the cursor, the newest at it; an empty dataset when size is 0."""
    cursor_s = floor_seconds(cursor)
    # Rendered as of a day before, so that no sold or listed date is after its new stamp.
    rendered_at = cursor_s - 86_400
    records = [
        {
            **render_record(dataset, index, rendered_at),
            "last_modified": format_timestamp(cursor_s - SPAN.seconds * index // size),
        }
        for index in range(size)
    ]
    for start in range(0, max(size, 1), UPSERT_BATCH):
        response = requests.post(
            f"{vendor_url}/datasets/{dataset}/records",
            json={"records": records[start : start + UPSERT_BATCH]},
            timeout=60,
        )
        response.raise_for_status()


def _prepared_source(
    db: Database, env: dict[str, str], dataset: str, setting: Setting, cursor: datetime
) -> str:
    """A source that has landed the dataset in a first run (from a cursor before every record),
    so that its later runs find nothing new and meet the landed versions again."""
    source_id = bench_source(
        db, env["VENDOR_URL"], dataset, cursor=cursor - SPAN - timedelta(minutes=1)
    )
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET lateness_allowance = %s WHERE source_id = %s",
            (setting.lateness_allowance, source_id),
        )
    direct_run(db, task_request(source_id), bucket=env["RAW_BUCKET"])
    if setting.window_at_cursor:
        with db.transaction() as cur:
            cur.execute(
                "UPDATE public.source SET landed_since = last_modified_date WHERE source_id = %s",
                (source_id,),
            )
    return source_id


def _ledger(db: Database, execution_arn: str) -> dict[str, Any]:
    with db.transaction() as cur:
        run = fetch_one(
            cur,
            """
            SELECT status, records, duplicates_skipped, late_records,
                   cursor_before - window_start AS overlap
              FROM public.source_run WHERE execution_arn = %s
            """,
            (execution_arn,),
        )
    assert run is not None and run["status"] == "succeeded", run
    # Nothing new: a run that landed anything would measure something else.
    assert run["records"] == 0 and run["late_records"] == 0, run
    return {"re_read": run["duplicates_skipped"], "overlap_s": run["overlap"].total_seconds()}


def _summary(machine: list[dict[str, Any]], direct: list[dict[str, Any]]) -> dict[str, Any]:
    runs = machine + direct
    return {
        "overlap_s": statistics.median(run["overlap_s"] for run in runs),
        # The same in every run: the records in the overlap, all landed before.
        "re_read_per_run": statistics.median(run["re_read"] for run in runs),
        "median_state_machine_s": statistics.median(run["s"] for run in machine),
        "median_state_machine_download_s": statistics.median(run["download_s"] for run in machine),
        "median_direct_s": statistics.median(run["s"] for run in direct),
        "median_direct_download_s": statistics.median(run["download_s"] for run in direct),
    }


TIMED = (
    "median_state_machine_s",
    "median_state_machine_download_s",
    "median_direct_s",
    "median_direct_download_s",
)


def _ratios(figures: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    return {key.removeprefix("median_"): figures[key] / reference[key] for key in TIMED}


def _per_record(figures: dict[str, Any], reference: dict[str, Any]) -> float | None:
    """What re-reading and skipping one record adds to the download's logic, in µs."""
    if not figures["re_read_per_run"]:
        return None
    added = figures["median_direct_download_s"] - reference["median_direct_download_s"]
    return float(added / figures["re_read_per_run"] * 1e6)
