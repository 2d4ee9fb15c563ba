"""`make bench`: every figure beside its reference, measured in the same run, as a ratio.

1. Download throughput: 100k and 1M vendor records through the download service's code path
   into the raw bucket, against the raw transfer of the same bytes (plain HTTP client, gzip, to
   disk) and the vendor's own serving rate; peak memory at both sizes.
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
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import json_output
from bench.cost import run_cost
from bench.loss import measure_loss, print_loss
from bench.orchestration import measure_orchestration
from bench.overlap import SETTINGS, measure_overlap
from bench.scale import measure_scale
from local.stack import LocalStack, StackOptions
from local.vendor.records import ANNOUNCEMENT

STATE_DIR = Path(".sourceflow")
RESULTS = STATE_DIR / "bench.json"
SIZES = {"100k": 100_000, "1m": 1_000_000}


@contextmanager
def cached_vendor(datasets: dict[str, int]) -> Any:
    """The demo vendor serving pre-rendered pages (rendered once, then from memory)."""
    args = [arg for name, size in datasets.items() for arg in ("--dataset", f"{name}={size}")]
    vendor = subprocess.Popen(
        [sys.executable, "-m", "local.vendor", "--port", "0", "--cache-pages", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert vendor.stdout is not None
        yield vendor.stdout.readline().strip().removeprefix(ANNOUNCEMENT)
    finally:
        vendor.terminate()
        vendor.wait(timeout=10)


def transfer(mode: str, vendor: str, dataset: str, env: dict[str, str]) -> dict[str, Any]:
    return json_output(
        [sys.executable, "-m", "bench.transfer", mode, "--vendor", vendor, "--dataset", dataset],
        env=env,
    )


def measure_download(stack_env: dict[str, str]) -> dict[str, Any]:
    env = {**os.environ, **stack_env}
    results: dict[str, Any] = {}
    with cached_vendor({f"bench-{label}": size for label, size in SIZES.items()}) as vendor:
        for label in SIZES:
            dataset = f"bench-{label}"
            transfer("download", vendor, dataset, env)  # renders every page once: the cache
            serve = transfer("serve", vendor, dataset, env)
            raw = transfer("raw", vendor, dataset, env)
            download = transfer("download", vendor, dataset, env)
            results[label] = {"serve": serve, "raw": raw, "download": download}
            print(
                f"  {label}: serve {serve['seconds']:.2f}s raw {raw['seconds']:.2f}s "
                f"download {download['seconds']:.2f}s",
                flush=True,
            )
    big = results["1m"]
    megabytes = big["raw"]["bytes"] / 1e6
    return {
        "records": big["download"]["records"],
        "records_per_s": big["download"]["records"] / big["download"]["seconds"],
        "mb_per_s": megabytes / big["download"]["seconds"],
        "raw_mb_per_s": megabytes / big["raw"]["seconds"],
        "vendor_mb_per_s": megabytes / big["serve"]["seconds"],
        "ratio_to_raw": big["raw"]["seconds"] / big["download"]["seconds"],
        "peak_rss_mb_100k": results["100k"]["download"]["peak_rss_mb"],
        "peak_rss_mb_1m": big["download"]["peak_rss_mb"],
        "raw_peak_rss_mb_1m": big["raw"]["peak_rss_mb"],
        "compressed_mb_1m": big["download"]["compressed_bytes"] / 1e6,
        "transferred_mb_1m": megabytes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "sections",
        nargs="*",
        metavar="SECTION",
        help=f"measure only these ({', '.join(SECTIONS)}); by default all but "
        f"{', '.join(OPTIONAL)}",
    )
    default = [section for section in SECTIONS if section not in OPTIONAL]
    sections = parser.parse_args(argv).sections or default
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
                report[section] = SECTIONS[section][1](stack)
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


SECTIONS: dict[str, tuple[str, Callable[[LocalStack], dict[str, Any]]]] = {
    "download": ("download throughput", lambda stack: measure_download(stack.env)),
    "orchestration": ("orchestration overhead", measure_orchestration),
    "scale": ("scale", measure_scale),
    "overlap": ("overlap re-read by a Normal run with nothing new", measure_overlap),
    "loss": ("nothing lost: Normal runs back to back while a vendor writes", measure_loss),
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
        d = report["download"]
        print(
            f"download 1M records: {d['records_per_s']:,.0f} records/s, {d['mb_per_s']:.1f} MB/s "
            f"vs raw transfer {d['raw_mb_per_s']:.1f} MB/s -> ratio {d['ratio_to_raw']:.2f} "
            f"(target >= 0.60); vendor serves {d['vendor_mb_per_s']:.1f} MB/s"
        )
        print(
            f"peak RSS: {d['peak_rss_mb_100k']:.0f} MB at 100k, {d['peak_rss_mb_1m']:.0f} MB at "
            f"1M (raw client {d['raw_peak_rss_mb_1m']:.0f} MB)"
        )
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
