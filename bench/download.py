"""Download throughput against its references, each measured in this run (docs/performance.md).

The vendor's dataset of 1M records (and 100k, for memory), served from its page cache:
- (a) `vendor`: the vendor serving JSON lines to a client that discards them;
- (b) `ideal`: those bytes compressed by ISA-L at the raw objects' level, and discarded;
- `raw_gzip6`: today's reference, JSON pages through stdlib json and zlib's gzip 6 to disk;
- the download: the service's code path, the vendor's JSON lines into the raw bucket;
- (c) dlt 1.31 loading the same pages to local files, installed by the benchmark into a
  virtualenv of its own under .sourceflow/ (skipped, and null, with `--skip-dlt`, or when the
  package index cannot be reached);
- the levers, each turned off alone (bench.transfer LEVERS), and the other gzip levels;
- records from a 1M-row partner table (postgres) and 100 MB of CSV drops (s3_files).
Every transfer is a process of its own; its peak memory is its VmHWM.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import json_output, new_source_id
from bench.transfer import LEVERS, RUN_START, page_params
from local.partner import LISTING_COLUMNS, create_listings_table
from local.pg import transaction
from local.stack import LocalStack, aws_client
from local.vendor.records import ANNOUNCEMENT, render_record
from shared.runtime.catalogue import RAW_GZIP_LEVEL

SIZES = {"100k": 100_000, "1m": 1_000_000}
PAGE_SIZE = 10_000
# Interleaved rounds of the references and the download at 1M: medians of these.
ROUNDS = 2
DLT_VERSION = "1.31.0"
# dlt is some 10x slower: its figure is measured on the 100k dataset (MB/s hold across sizes).
DLT_DATASET = "100k"
# The other gzip levels a deployment may choose (RAW_GZIP_LEVEL).
OTHER_GZIP_LEVELS = tuple(level for level in (0, 2, 3) if level != RAW_GZIP_LEVEL)
# A vendor far away: each page this long in coming.
LATENCY_DATASET = ("bench-latency", 200_000)
LATENCY_PAGE_SIZE = PAGE_SIZE
LATENCY_MS = 50
PARTNER_ROWS = 1_000_000
CSV_DROP_BYTES = 100_000_000
CSV_OBJECT_BYTES = 10_000_000


@contextmanager
def cached_vendor(datasets: dict[str, int], page_delay_ms: int = 0) -> Iterator[str]:
    """The demo vendor serving pre-rendered pages (rendered once, then from memory), each after
    `page_delay_ms`."""
    args = [arg for name, size in datasets.items() for arg in ("--dataset", f"{name}={size}")]
    args += ["--cached-page-delay-ms", str(page_delay_ms)]
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


def transfer(mode: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    return json_output([sys.executable, "-m", "bench.transfer", mode, *args], env=env)


def measure_download(stack: LocalStack, state_dir: Path, *, skip_dlt: bool) -> dict[str, Any]:
    env = {**os.environ, **stack.env}
    results: dict[str, Any] = {}
    with cached_vendor({f"bench-{label}": size for label, size in SIZES.items()}) as vendor:

        def run(mode: str, label: str, *args: str, **extra_env: str) -> dict[str, Any]:
            where = ("--vendor", vendor, "--dataset", f"bench-{label}")
            return transfer(
                mode, {**env, **extra_env}, *where, "--page-size", str(PAGE_SIZE), *args
            )

        for label in SIZES:
            run("download", label)  # renders every page once (JSON lines): the cache
            run("raw", label)  # and the JSON pages
        rounds = []
        for _ in range(ROUNDS):
            measured = {mode: run(mode, "1m") for mode in ("vendor", "ideal", "raw", "download")}
            for lever in LEVERS:
                measured[f"without {lever}"] = run("download", "1m", "--levers", lever)
            rounds.append(measured)
            print(f"  1M round: {_seconds(measured)}", flush=True)
        results["100k"] = run("download", "100k")
        levels = {
            str(level): run("download", "1m", RAW_GZIP_LEVEL=str(level))
            for level in OTHER_GZIP_LEVELS
        }
        print(f"  gzip levels: {_seconds(levels)}", flush=True)
        dlt = None if skip_dlt else measure_dlt(state_dir / "bench-dlt", vendor, env)
        print(f"  dlt: {dlt}", flush=True)
    summary = _summary(rounds, results["100k"], levels, dlt)
    summary["prefetch_with_latency"] = measure_prefetch_with_latency(env)
    summary["partner_table"] = measure_partner_table(stack, env)
    summary["csv_drops"] = measure_csv_drops(stack, env)
    return summary


def _seconds(figures: Any) -> Any:
    if isinstance(figures, dict) and "seconds" in figures:
        return round(figures["seconds"], 2)
    return {key: _seconds(value) for key, value in figures.items()}


def _summary(
    rounds: list[dict[str, Any]],
    download_100k: dict[str, Any],
    levels: dict[str, dict[str, Any]],
    dlt: dict[str, Any] | None,
) -> dict[str, Any]:
    megabytes = rounds[0]["vendor"]["bytes"] / 1e6  # the JSON lines; the JSON pages alike

    def rate(mode: str) -> float:
        return megabytes / statistics.median(r[mode]["seconds"] for r in rounds)

    def paired(mode: str) -> float:
        """How many times the download's time `mode` takes, the median of the rounds'."""
        return statistics.median(r[mode]["seconds"] / r["download"]["seconds"] for r in rounds)

    download = rate("download")
    dlt_rate = dlt["mb_per_s"] if dlt else None
    last = rounds[-1]
    return {
        "records": last["download"]["records"],
        "transferred_mb_1m": megabytes,
        "records_per_s": last["download"]["records"] * download / megabytes,
        "mb_per_s": download,
        "vendor_mb_per_s": rate("vendor"),
        "ideal_mb_per_s": rate("ideal"),
        "raw_gzip6_mb_per_s": rate("raw"),
        "dlt_mb_per_s": dlt_rate,
        "ratio_to_ideal": download / rate("ideal"),
        "ratio_to_raw_gzip6": download / rate("raw"),
        "ratio_to_dlt": download / dlt_rate if dlt_rate else None,
        # Paired in each round, for a loaded machine: each round's own ratios.
        "round_ratios_to_raw_gzip6": [
            r["raw"]["seconds"] / r["download"]["seconds"] for r in rounds
        ],
        "round_ratios_to_ideal": [r["ideal"]["seconds"] / r["download"]["seconds"] for r in rounds],
        "rounds_s": [_seconds(r) for r in rounds],
        "peak_rss_mb_100k": download_100k["peak_rss_mb"],
        "peak_rss_mb_1m": max(r["download"]["peak_rss_mb"] for r in rounds),
        "raw_gzip6_peak_rss_mb_1m": max(r["raw"]["peak_rss_mb"] for r in rounds),
        "compressed_mb_1m": last["download"]["compressed_bytes"] / 1e6,
        "gzip_level": RAW_GZIP_LEVEL,
        "levers_off": {
            lever: {
                "what": LEVERS[lever],
                "mb_per_s": rate(f"without {lever}"),
                "download_is_faster_by": paired(f"without {lever}"),
                "compressed_mb": last[f"without {lever}"]["compressed_bytes"] / 1e6,
                "peak_rss_mb": last[f"without {lever}"]["peak_rss_mb"],
            }
            for lever in LEVERS
        },
        "gzip_levels": {
            level: {
                "mb_per_s": megabytes / figures["seconds"],
                "compressed_mb": figures["compressed_bytes"] / 1e6,
            }
            for level, figures in levels.items()
        },
        "dlt": dlt,
    }


def measure_prefetch_with_latency(env: dict[str, str]) -> dict[str, Any]:
    """The prefetch lever where it is meant to pay: a vendor whose every page takes
    LATENCY_MS to come (the local one answers at once)."""
    label, size = LATENCY_DATASET
    with cached_vendor({label: size}, page_delay_ms=LATENCY_MS) as vendor:
        where = ("--vendor", vendor, "--dataset", label, "--page-size", str(LATENCY_PAGE_SIZE))
        transfer("download", env, *where)  # renders the pages once
        rounds = [
            {
                "with": transfer("download", env, *where)["seconds"],
                "without": transfer("download", env, *where, "--levers", "prefetch")["seconds"],
            }
            for _ in range(ROUNDS)
        ]
    return {
        "page_delay_ms": LATENCY_MS,
        "pages": size // LATENCY_PAGE_SIZE,
        "rounds_s": rounds,
        "download_is_faster_by": statistics.median(r["without"] / r["with"] for r in rounds),
    }


def measure_dlt(home: Path, vendor: str, env: dict[str, str]) -> dict[str, Any] | None:
    """dlt's run over the DLT_DATASET, in its own virtualenv (made once); None, with a word on
    why, when it cannot be installed."""
    python = home / "venv" / "bin" / "python"
    stamp = home / f"dlt-{DLT_VERSION}.installed"
    if not stamp.exists():
        print(f"  installing dlt {DLT_VERSION} into {home / 'venv'}…", flush=True)
        steps = [
            [sys.executable, "-m", "venv", str(home / "venv")],
            [str(python), "-m", "pip", "install", "--quiet", "--timeout", "30",
             f"dlt=={DLT_VERSION}", "requests"],
        ]  # fmt: skip
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                said = done.stderr.strip()[-300:]
                print(
                    f"  dlt skipped: `{' '.join(step[:4])} …` failed ({said}); rerun with "
                    "--skip-dlt when the package index cannot be reached",
                    flush=True,
                )
                return None
        stamp.touch()
    with tempfile.TemporaryDirectory(dir=home.resolve()) as out:
        command = [
            str(python), str(Path(__file__).with_name("dlt_load.py")),
            "--vendor", vendor, "--dataset", f"bench-{DLT_DATASET}",
            "--params", json.dumps(page_params(PAGE_SIZE, "json")), "--out", out,
        ]  # fmt: skip
        figures = json_output(command, env=env)
    megabytes = _dataset_megabytes(vendor, DLT_DATASET)
    return {**figures, "dataset": DLT_DATASET, "mb_per_s": megabytes / figures["seconds"]}


def _dataset_megabytes(vendor: str, label: str) -> float:
    return float(
        transfer("vendor", dict(os.environ), "--vendor", vendor, "--dataset", f"bench-{label}",
                 "--page-size", str(PAGE_SIZE))["bytes"] / 1e6
    )  # fmt: skip


def measure_partner_table(stack: LocalStack, env: dict[str, str]) -> dict[str, Any]:
    """Records of a PARTNER_ROWS-row partner table (postgres source) into the raw bucket."""
    partner = stack.partner
    assert partner is not None
    table = "bench_listings"
    create_listings_table(partner.owner_url, table)
    with transaction(partner.owner_url) as cur:
        cur.execute(
            f"""
            INSERT INTO {table} ({", ".join(LISTING_COLUMNS)})
            SELECT 'L' || lpad(i::text, 7, '0'),
                   timestamptz '2020-01-01' + i * interval '1 minute',
                   CASE WHEN i %% 3 = 0 THEN timestamptz '2019-06-01' + i * interval '1 minute' END,
                   (ARRAY['for_sale', 'sold', 'withdrawn'])[1 + i %% 3],
                   100000 + (i %% 900000),
                   (ARRAY['London', 'Leeds', 'Bristol', 'Cardiff'])[1 + i %% 4]
              FROM generate_series(1, %s) AS i
            """,
            (PARTNER_ROWS,),
        )
        cur.execute(f"ANALYZE {table}")
        cur.execute(f"SELECT sum(octet_length(to_jsonb(t)::text)) FROM {table} AS t")
        (json_bytes,) = cur.fetchone()
    source_id = new_source_id()
    secret = partner.bind_reader_password(aws_client(env, "secretsmanager"), source_id)
    connection = partner.table_connection(table, secret)
    figures = _download(env, "postgres", connection, source_id)
    return _rates(figures, int(json_bytes), "MB of the rows as JSON")


def measure_csv_drops(stack: LocalStack, env: dict[str, str]) -> dict[str, Any]:
    """CSV_DROP_BYTES of CSV in objects of CSV_OBJECT_BYTES (s3_files source)."""
    partner = stack.partner
    assert partner is not None
    s3, prefix = aws_client(env, "s3"), f"bench-{new_source_id()}/"
    total, index, number = 0, 0, 0
    while total < CSV_DROP_BYTES:
        text = io.StringIO()
        writer = csv.DictWriter(
            text, fieldnames=list(render_record("csv", 0, 0)), lineterminator="\n"
        )
        writer.writeheader()
        while text.tell() < CSV_OBJECT_BYTES:
            writer.writerow(render_record("csv", index, int(RUN_START.timestamp()) - 86400))
            index += 1
        body = text.getvalue().encode()
        s3.put_object(Bucket=partner.drops_bucket, Key=f"{prefix}drop-{number:03d}.csv", Body=body)
        total, number = total + len(body), number + 1
    connection = {**partner.drops_connection(prefix, "csv"), "key_field": "id"}
    return _rates(_download(env, "s3_files", connection, None), total, "MB of CSV")


def _download(
    env: dict[str, str], source_type: str, connection: dict[str, Any], source_id: str | None
) -> dict[str, Any]:
    args = ["--source-type", source_type, "--connection", json.dumps(connection)]
    return transfer("download", env, *args, *(("--source-id", source_id) if source_id else ()))


def _rates(figures: dict[str, Any], source_bytes: int, what: str) -> dict[str, Any]:
    return {
        **figures,
        "source_mb": source_bytes / 1e6,
        "source_is": what,
        "mb_per_s": source_bytes / 1e6 / figures["seconds"],
        "records_per_s": figures["records"] / figures["seconds"],
    }
