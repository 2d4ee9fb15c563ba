"""Nothing lost, measured (issue 14; DESIGN.md, "The data guarantee"): how many record versions
a source wrote that its Normal runs never landed in the raw zone, and how many they landed twice.

Each scenario has a fresh vendor dataset and a Normal source of its own (it has run before: no
first-run backdating). A writer thread upserts into the dataset every TICK_S a new id and a new
version of an id written before, and the vendor stamps each version (key, last_modified) in
whole seconds of the dataset's clock, as it does by default. Meanwhile Normal runs of the source
go back to back through the whole state machine. After `seconds` of writing the writer stops;
once the run clock has passed every version's stamp (and the moment it became visible) one more
Normal run starts. The figures then come from the succeeded runs' manifests and raw objects.

The scenarios: a busy source whose every other version becomes visible only 1, 2 or 5 s after
its stamp (a long transaction stamped when it began) while the rest are visible at once; a
whole-second writer whose clock agrees with the runs', runs 30 s behind them, or 30 s ahead; and
one record stamped 9999-12-31T23:59:59Z, upserted after the first run, among a whole-second
writer's — read from the vendor as it is, and through a loopback proxy that drops
`modified_until`, as a vendor that filters on "modified since" only would.

What counts as lost: a version the vendor stored that no succeeded Normal run landed. The writer
gives each version the chance the guarantee speaks of — a new version of an id is written only
once a Normal run that started after the previous version became visible, after its stamp and
after its write, has succeeded — so no version is replaced before a run could read it. The
far-future version is counted apart from the others.

`python -m bench.loss [--seconds S] [--scenario NAME ...]` runs it on a stack of its own and
writes its figures into `.sourceflow/bench.json` under `loss`; `python -m bench loss` runs it
as a section of the benchmarks. Loopback only; bounded by `seconds` and MAX_RUNS per scenario.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Collection, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests

from bench.common import bench_source, serving
from local.stack import LocalStack, StackOptions, aws_client
from local.vendor.records import floor_seconds, format_timestamp, parse_timestamp
from ops.runs import wait_for_execution
from shared.runtime.executions import start_run
from shared.store.db import Database

WRITE_SECONDS = 45.0
MAX_RUNS = 400
TICK_S = 0.25
RUN_TIMEOUT_S = 180.0
FAR_FUTURE = "9999-12-31T23:59:59Z"
STATE_DIR = Path(".sourceflow")
RESULTS = STATE_DIR / "bench.json"
# A version: the record's key and its last-modified stamp in epoch seconds.
Version = tuple[str, int]


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    visible_after_s: int = 0  # half the versions visible this long after their stamp
    clock_offset_s: int = 0  # the dataset's clock runs this far ahead of the runs' (behind: < 0)
    far_future: bool = False  # one record stamped FAR_FUTURE, upserted after the first run
    # The source reads the vendor through a proxy that drops `modified_until`, as an API that
    # filters on "modified since" only answers.
    since_only: bool = False


SCENARIOS = (
    Scenario("late_1s", "busy, half the versions visible 1 s late", visible_after_s=1),
    Scenario("late_2s", "busy, half the versions visible 2 s late", visible_after_s=2),
    Scenario("late_5s", "busy, half the versions visible 5 s late", visible_after_s=5),
    Scenario("skew_0", "whole seconds, clock skew 0"),
    Scenario("behind_30s", "whole seconds, vendor clock 30 s behind", clock_offset_s=-30),
    Scenario("ahead_30s", "whole seconds, vendor clock 30 s ahead", clock_offset_s=30),
    Scenario("far_future", f"one record stamped {FAR_FUTURE[:10]}", far_future=True),
    Scenario(
        "far_future_since_only",
        "the same, vendor ignores modified_until",
        far_future=True,
        since_only=True,
    ),
)


@dataclass
class Writer:
    """Upserts versions into one dataset from a thread and remembers every version the vendor
    stored. Each tick writes a new id and a new version of an old one, visible at once; in a
    scenario of late versions, as many again that become visible late."""

    vendor_url: str
    dataset: str
    scenario: Scenario
    # Every version written, with how long after its stamp it became visible.
    versions: dict[Version, int] = field(default_factory=dict)
    # When the last version written may first be read: visible, stamped no later than a run's
    # start, and written.
    ready_at: float = 0.0
    # The start (run clock) of the latest Normal run that succeeded: a version ready before it
    # has had its chance, so its id may take a new version.
    covered_until: float = 0.0
    # The ids whose version may be replaced once covered, by lateness, as (ready, id).
    _waiting: defaultdict[int, deque[tuple[float, str]]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    _stop: threading.Event = field(default_factory=threading.Event)
    _until: float = 0.0
    _thread: threading.Thread | None = None
    _failure: BaseException | None = None

    def start(self, seconds: float) -> None:
        """Write for `seconds` at most (a slow run does not make the writing longer)."""
        self._until = time.monotonic() + seconds
        self._thread = threading.Thread(target=self._write, name=f"writer-{self.dataset}")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._failure is not None:
            raise RuntimeError(f"the writer of {self.dataset} failed") from self._failure

    def upsert(self, records: list[dict[str, Any]], late_by: int = 0) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"records": records}
        if late_by:
            body["visible_after_s"] = late_by
        response = requests.post(
            f"{self.vendor_url}/datasets/{self.dataset}/records", json=body, timeout=30
        )
        response.raise_for_status()
        stored: list[dict[str, Any]] = response.json()["records"]
        return stored

    def _write(self) -> None:
        lateness = sorted({0, self.scenario.visible_after_s})
        written = 0
        try:
            while not self._stop.wait(TICK_S) and time.monotonic() < self._until:
                for late_by in lateness:
                    records = [{"id": f"{self.dataset}-{written:06d}", "price": 100_000 + written}]
                    written += 1
                    waiting = self._waiting[late_by]
                    if waiting and waiting[0][0] < self.covered_until:
                        records.append({"id": waiting.popleft()[1], "price": 200_000 + written})
                    self._remember(self.upsert(records, late_by), late_by)
        except BaseException as exc:  # reported by stop(), in the measuring thread
            self._failure = exc

    def _remember(self, stored: list[dict[str, Any]], late_by: int) -> None:
        written_at = time.time()
        for record in stored:
            stamp = floor_seconds(parse_timestamp(record["last_modified"]))
            visible_at = stamp + late_by - self.scenario.clock_offset_s
            ready = max(visible_at, stamp, written_at)
            self.versions[record["id"], stamp] = late_by
            self._waiting[late_by].append((ready, record["id"]))
            self.ready_at = max(self.ready_at, ready)


def measure_loss(
    stack: LocalStack,
    seconds: float = WRITE_SECONDS,
    scenarios: tuple[Scenario, ...] = SCENARIOS,
) -> dict[str, Any]:
    """Every scenario in turn on the running stack; the figures of each, by name."""
    db = Database(stack.env["DATABASE_URL"], application_name="sourceflow-bench")
    results: dict[str, Any] = {"write_s": seconds, "tick_s": TICK_S, "max_runs": MAX_RUNS}
    try:
        for scenario in scenarios:
            print(f"  {scenario.label}…", flush=True)
            figures = _one_scenario(stack, db, scenario, seconds)
            results[scenario.name] = figures
            print(f"    {_row(scenario, figures)}", flush=True)
    finally:
        db.close()
    return results


def _one_scenario(
    stack: LocalStack, db: Database, scenario: Scenario, seconds: float
) -> dict[str, Any]:
    env = stack.env
    dataset = f"loss-{scenario.name}-{uuid.uuid4().hex[:8]}"
    writer = Writer(env["VENDOR_URL"], dataset, scenario)
    writer.upsert([])  # creates the dataset, empty
    if scenario.clock_offset_s:
        requests.post(
            f"{env['VENDOR_URL']}/admin/clock",
            json={"dataset": dataset, "offset_s": scenario.clock_offset_s},
            timeout=30,
        ).raise_for_status()
    reads: AbstractContextManager[str] = (
        since_only_vendor(env["VENDOR_URL"])
        if scenario.since_only
        else nullcontext(env["VENDOR_URL"])
    )
    with reads as vendor_url:
        # A Normal source that has run before (no first-run backdating), its cursor a minute ago.
        cursor = datetime.now(UTC) - timedelta(minutes=1)
        source_id = bench_source(db, vendor_url, dataset, cursor=cursor)
        return _measure(stack, db, scenario, seconds, writer, source_id)


def _measure(
    stack: LocalStack,
    db: Database,
    scenario: Scenario,
    seconds: float,
    writer: Writer,
    source_id: str,
) -> dict[str, Any]:
    """Normal runs back to back while the writer writes, then one more; the figures."""
    env = stack.env
    sfn = aws_client(env, "stepfunctions")

    executions: Counter[str] = Counter()
    durations: list[float] = []

    def run() -> None:
        started = time.time()
        arn = start_run(sfn, env["STATE_MACHINE_ARN"], source_id)
        described = wait_for_execution(sfn, arn, timeout=RUN_TIMEOUT_S)
        executions[described["status"]] += 1
        durations.append(time.time() - started)
        if described["status"] == "SUCCEEDED":
            writer.covered_until = max(writer.covered_until, started)

    run()  # before the first write: it lands nothing, and wakes the workers
    far_future: Version | None = None
    deadline = time.monotonic() + seconds
    writer.start(seconds)
    try:
        while time.monotonic() < deadline and executions.total() < MAX_RUNS - 1:
            run()
            if scenario.far_future and far_future is None:
                record = {"id": f"{writer.dataset}-far", "last_modified": FAR_FUTURE}
                (stored,) = writer.upsert([record])
                far_future = (stored["id"], floor_seconds(parse_timestamp(FAR_FUTURE)))
    finally:
        writer.stop()
    time.sleep(max(0.0, writer.ready_at + 1 - time.time()))
    run()
    return _count(stack, db, source_id, writer.versions, far_future) | {
        "runs": executions.total(),
        "executions": dict(executions),
        "median_run_s": statistics.median(durations),
    }


@contextmanager
def since_only_vendor(upstream: str) -> Iterator[str]:
    """A loopback proxy of the vendor that drops `modified_until` from every GET; its URL."""
    with serving(_Proxy(upstream)) as url:
        yield url


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _SinceOnly)
        self.upstream = upstream


class _SinceOnly(BaseHTTPRequestHandler):
    server: _Proxy
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        kept = [(k, v) for k, v in parse_qsl(url.query) if k != "modified_until"]
        answer = requests.get(f"{self.server.upstream}{url.path}?{urlencode(kept)}", timeout=60)
        self.send_response(answer.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet, as the vendor is."""


def _count(
    stack: LocalStack,
    db: Database,
    source_id: str,
    written: dict[Version, int],
    far_future: Version | None,
) -> dict[str, Any]:
    """What the succeeded Normal runs landed, from their manifests and raw objects, against
    what the writer wrote; and where each run left the cursor."""
    with db.transaction() as cur:
        cur.execute(
            "SELECT status, flow_type, window_end, cursor_after, manifest_key"
            " FROM public.source_run WHERE source_id = %s ORDER BY started_at",
            (source_id,),
        )
        ledger = [dict(row) for row in cur.fetchall()]
    succeeded = [row for row in ledger if row["status"] == "succeeded"]
    assert all(row["flow_type"] == "normal" for row in succeeded), ledger
    s3, bucket = aws_client(stack.env, "s3"), stack.env["RAW_BUCKET"]
    landed: Counter[Version] = Counter()
    far_run, loaded_after_far = None, 0
    for index, row in enumerate(succeeded):
        versions = _landed(s3, bucket, row["manifest_key"])
        landed.update(versions)
        if far_run is not None:
            loaded_after_far += sum(version != far_future for version in versions)
        elif far_future in versions:
            far_run = index
    lost = set(written) - set(landed)
    late = {version for version, late_by in written.items() if late_by}
    figures: dict[str, Any] = {
        **_lost(written.keys(), lost),
        "keys_written": len({key for key, _ in written}),  # the rest: new versions of a key
        "duplicated": sum(1 for count in landed.values() if count > 1),
        "landed_not_written": sum(v not in written and v != far_future for v in landed),
        "runs_succeeded": len(succeeded),
        "cursor_past_window_end": sum(
            row["cursor_after"] is not None and row["cursor_after"] > row["window_end"]
            for row in succeeded
        ),
        "cursor_after_last_run": _iso(succeeded[-1]["cursor_after"]) if succeeded else None,
    }
    if late:
        figures["late"] = _lost(late, lost & late)
    if far_future is not None:
        figures["far_future"] = {
            "landed": landed[far_future],
            "runs_after_it": 0 if far_run is None else len(succeeded) - far_run - 1,
            # The other versions the runs after the one that landed it first landed.
            "others_loaded_after_it": loaded_after_far,
        }
    return figures


def _lost(written: Collection[Version], lost: set[Version]) -> dict[str, Any]:
    return {
        "versions_written": len(written),
        "lost": len(lost),
        "lost_pct": 100 * len(lost) / len(written) if written else 0.0,
    }


def _landed(s3: Any, bucket: str, manifest_key: str) -> list[Version]:
    """The versions in one run's raw objects, in the order they were written."""
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    versions = []
    for entry in manifest["objects"]:
        body = gzip.decompress(s3.get_object(Bucket=bucket, Key=entry["key"])["Body"].read())
        for line in body.splitlines():
            record = json.loads(line)
            versions.append((record["id"], floor_seconds(parse_timestamp(record["last_modified"]))))
    return versions


def _iso(moment: datetime) -> str:
    return format_timestamp(floor_seconds(moment))


def print_loss(figures: dict[str, Any]) -> None:
    """The table: per scenario, versions written, lost, duplicated, runs, and the cursor."""
    print(
        f"nothing lost: {figures['write_s']:.0f} s of writing per scenario, Normal runs back to "
        "back through the state machine"
    )
    print(
        f"  {'scenario':<42} {'lost/written':>17} {'late: lost/written':>18} {'dup':>4} "
        f"{'runs':>5}  cursor"
    )
    for scenario in SCENARIOS:
        if scenario.name in figures:
            print(f"  {_row(scenario, figures[scenario.name])}")


def _row(scenario: Scenario, f: dict[str, Any]) -> str:
    lost = _fraction(f)
    late = _fraction(f["late"]) if "late" in f else "-"
    failed = f["runs"] - f["runs_succeeded"]
    runs = f"{f['runs']}" + (f" ({failed} failed)" if failed else "")
    cursor = f"past window end in {f['cursor_past_window_end']} runs"
    if "far_future" in f:
        far = f["far_future"]
        cursor += (
            f"; far-future record landed {far['landed']}x, the {far['runs_after_it']} runs "
            f"after it loaded {far['others_loaded_after_it']:,} others"
        )
    return f"{scenario.label:<42} {lost:>17} {late:>18} {f['duplicated']:>4} {runs:>5}  {cursor}"


def _fraction(figures: dict[str, Any]) -> str:
    return f"{figures['lost']:,}/{figures['versions_written']:,} ({figures['lost_pct']:.0f}%)"


def _revision() -> str:
    completed = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return completed.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loss", description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=WRITE_SECONDS, help="writing time per scenario"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[scenario.name for scenario in SCENARIOS],
        help="only these (repeatable); all by default",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=STATE_DIR / "bench-loss", help="the stack's state"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file to update")
    args = parser.parse_args(argv)
    chosen = tuple(s for s in SCENARIOS if not args.scenario or s.name in args.scenario)
    with LocalStack(StackOptions(state_dir=args.state_dir, ticker=False)) as stack:
        figures = measure_loss(stack, args.seconds, chosen)
    figures |= {
        "measured_at": datetime.now(UTC).isoformat(),
        "revision": _revision(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    report = json.loads(args.results.read_text()) if args.results.exists() else {}
    report["loss"] = figures
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print_loss(figures)
    print(f"written to {args.results} (loss)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
