"""`make bench`: every figure beside its reference, measured in the same run, as a ratio.

1. Download throughput: 1M vendor records through the download service's code path into the
   raw bucket, against the vendor serving to a client that discards them, an ideal pipeline
   (the page bytes compressed by the fastest gzip, discarded), today's raw reference (stdlib
   json, gzip 6, to disk) and dlt (`--skip-dlt` when the package index cannot be reached); what
   each lever is worth; peak memory at 100k and 1M; a 1M-row partner table and 100 MB of CSV
   drops (bench/download.py).
2. Orchestration overhead: a run with nothing new through the whole state machine (asked for
   by a Run Requested event, through the scheduler's admission), against the three services'
   logic called directly in one process, the two alternating; the median of the paired
   differences.
3. Scale: 200, 500, 1,000 sources due at once, fired by one schedule tick, admitted as many at
   once as the stack has download workers.
4. Overlap: a Normal run with nothing new that re-reads the lateness allowance before its
   cursor (0, 1,000, 10,000 records there), with the default allowance, with none, and with no
   overlap at all.
5. Nothing lost, only when asked for (`python -m bench loss`; about 10 minutes): record versions
   a vendor writes while Normal runs go back to back, and how many the runs lost or landed twice
   (bench/loss.py, which also runs alone: `python -m bench.loss`).
Writes `.sourceflow/bench.json`. `python -m bench SECTION...` (download, orchestration, scale,
overlap, loss) measures only those, into `.sourceflow/bench-SECTION-....json`.
"""

from __future__ import annotations

import os

# The services' logic runs in this process too: no CloudWatch or X-Ray output in the report.
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.cost import run_cost
from bench.download import measure_download
from bench.loss import measure_loss, print_loss
from bench.orchestration import measure_orchestration
from bench.overlap import SETTINGS, measure_overlap
from bench.scale import measure_scale
from local.stack import LocalStack, StackOptions

STATE_DIR = Path(".sourceflow")
RESULTS = STATE_DIR / "bench.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "sections",
        nargs="*",
        metavar="SECTION",
        help=f"measure only these ({', '.join(SECTIONS)}); by default all but "
        f"{', '.join(OPTIONAL)}",
    )
    parser.add_argument(
        "--skip-dlt",
        action="store_true",
        help="measure no dlt reference (download.dlt_mb_per_s null): for a machine that cannot "
        "reach the package index to install it",
    )
    default = [section for section in SECTIONS if section not in OPTIONAL]
    args = parser.parse_args(argv)
    sections = args.sections or default
    unknown = [section for section in sections if section not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; expected some of {', '.join(SECTIONS)}")
    started = time.monotonic()
    report: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    options = StackOptions(state_dir=STATE_DIR / "bench", ticker=False)
    with LocalStack(options) as stack:
        for section in SECTIONS:
            if section in sections:
                print(f"{SECTIONS[section][0]}…", flush=True)
                report[section] = SECTIONS[section][1](stack, args)
    if "download" in report and "orchestration" in report:
        report["cost"] = estimate_costs(report)
    report["wall_s"] = time.monotonic() - started
    results = (
        RESULTS
        if set(sections) >= set(default)
        else RESULTS.with_stem("-".join(["bench", *sections]))
    )
    results.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    print(f"written to {results}")
    return 0


Measure = Callable[[LocalStack, argparse.Namespace], dict[str, Any]]
SECTIONS: dict[str, tuple[str, Measure]] = {
    "download": (
        "download throughput",
        lambda stack, args: measure_download(stack, STATE_DIR, skip_dlt=args.skip_dlt),
    ),
    "orchestration": ("orchestration overhead", lambda stack, _: measure_orchestration(stack)),
    "scale": ("scale", lambda stack, _: measure_scale(stack)),
    "overlap": (
        "overlap re-read by a Normal run with nothing new",
        lambda stack, _: measure_overlap(stack),
    ),
    "loss": (
        "nothing lost: Normal runs back to back while a vendor writes",
        lambda stack, _: measure_loss(stack),
    ),
}
# Measured only when named: they take long and are no speed figure.
OPTIONAL = ("loss",)


def estimate_costs(report: dict[str, Any]) -> dict[str, Any]:
    """A typical Normal run (nothing much new) and a 1M-record Re-specs run, on AWS."""
    orchestration, download = report["orchestration"], report["download"]
    logic = orchestration["median_direct_step_s"]
    return {
        "normal_run": run_cost(
            transitions=orchestration["state_transitions_per_run"], step_seconds=logic, parts=0
        ),
        "respecs_1m_run": run_cost(
            transitions=orchestration["state_transitions_per_run"],
            step_seconds={**logic, "Download": download["records"] / download["records_per_s"]},
            parts=math.ceil(download["records"] / 100_000),
        ),
    }


def print_report(report: dict[str, Any]) -> None:
    print()
    if "download" in report:
        print_download(report["download"])
    if "orchestration" in report:
        o = report["orchestration"]
        print(
            f"orchestration: median {o['median_state_machine_s']:.3f}s per run through the "
            f"state machine vs {o['median_direct_s']:.3f}s direct -> overhead (median of "
            f"paired differences) {o['median_overhead_s']:.3f}s; request to start through "
            f"the scheduler's admission {o['median_admission_s']:.3f}s"
        )
        for step, seconds in o["median_step_s"].items():
            print(f"  {step}: {seconds:.3f}s")
    for size, figures in report.get("scale", {}).items():
        if size.isdigit():
            print(
                f"scale {size}: {figures['wall_s']:.1f}s, {figures['runs_per_min']:.0f} runs/min,"
                f" max {figures['db_connections']} DB connections, all correct: "
                f"{figures['all_correct']} ({figures['ended']}); at most "
                f"{figures['most_under_way']} under way (capacity "
                f"{figures['admission_capacity']}); load average "
                f"{figures['load_average_1m']['mean']:.1f}"
            )
    for size, figures in report.get("overlap", {}).items():
        if size.isdigit():
            print_overlap(int(size), figures)
    if "loss" in report:
        print_loss(report["loss"])


def print_download(d: dict[str, Any]) -> None:
    dlt = f"{d['dlt_mb_per_s']:.1f} MB/s" if d["dlt_mb_per_s"] else "skipped"
    ratio_to_dlt = f"{d['ratio_to_dlt']:.1f}" if d["ratio_to_dlt"] else "-"
    print(
        f"download 1M records: {d['records_per_s']:,.0f} records/s, {d['mb_per_s']:.1f} MB/s; "
        f"ideal {d['ideal_mb_per_s']:.1f} -> ratio {d['ratio_to_ideal']:.2f} (target >= 0.5); "
        f"raw gzip 6 {d['raw_gzip6_mb_per_s']:.1f} -> ratio {d['ratio_to_raw_gzip6']:.2f} "
        f"(target >= 3.0); dlt {dlt} -> ratio {ratio_to_dlt} (target >= 10); vendor serves "
        f"{d['vendor_mb_per_s']:.0f} MB/s"
    )
    print(
        f"peak RSS (VmHWM): {d['peak_rss_mb_100k']:.0f} MB at 100k, {d['peak_rss_mb_1m']:.0f} MB "
        f"at 1M (raw gzip 6 client {d['raw_gzip6_peak_rss_mb_1m']:.0f} MB); raw objects "
        f"{d['compressed_mb_1m']:.0f} MB at gzip level {d['gzip_level']}"
    )
    for lever, figures in d["levers_off"].items():
        print(
            f"  without {lever}: {figures['mb_per_s']:.1f} MB/s (the download is "
            f"{figures['download_is_faster_by']:.2f}x that)"
        )
    for level, figures in d["gzip_levels"].items():
        print(
            f"  gzip level {level}: {figures['mb_per_s']:.1f} MB/s, "
            f"{figures['compressed_mb']:.0f} MB"
        )
    latency = d["prefetch_with_latency"]
    print(
        f"  prefetch, each page {latency['page_delay_ms']} ms in coming: the download is "
        f"{latency['download_is_faster_by']:.2f}x as fast with it"
    )
    for name in ("partner_table", "csv_drops"):
        f = d[name]
        print(
            f"{name}: {f['records']:,} records in {f['seconds']:.1f}s, "
            f"{f['records_per_s']:,.0f} records/s, {f['mb_per_s']:.1f} {f['source_is']}/s, "
            f"peak RSS {f['peak_rss_mb']:.0f} MB"
        )


def print_overlap(size: int, figures: dict[str, Any]) -> None:
    """One size: each setting's median run, then the ratios default/none and none/no overlap."""
    print(f"overlap, {size:,} records in the 12 min before the cursor, nothing new:")
    for setting in SETTINGS:
        f = figures[setting.name]
        print(
            f"  {setting.name:>9}: overlap {f['overlap_s'] / 60:4.1f} min, re-reads "
            f"{f['re_read_per_run']:>6,.0f}; {f['median_state_machine_s']:.3f}s through the "
            f"state machine (Download {f['median_state_machine_download_s']:.3f}s), "
            f"{f['median_direct_s']:.3f}s direct (download {f['median_direct_download_s']:.3f}s)"
        )
    for name, label in (
        ("ratio_default_to_none", "default/none"),
        ("ratio_none_to_at_cursor", "none/at_cursor"),
    ):
        r = figures[name]
        print(
            f"  {label}: {r['state_machine_s']:.2f} state machine "
            f"(Download {r['state_machine_download_s']:.2f}), {r['direct_s']:.2f} direct "
            f"(download {r['direct_download_s']:.2f})"
        )
    if figures["direct_download_us_per_record_re_read"] is not None:
        print(
            f"  each record re-read and skipped adds "
            f"{figures['direct_download_us_per_record_re_read']:.0f} µs to the download's logic"
        )


if __name__ == "__main__":
    sys.exit(main())
