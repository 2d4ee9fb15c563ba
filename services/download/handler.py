"""Download Lambda: download-request messages → raw objects + manifest, with heartbeats."""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from typing import Any

from services.download.adapters import S3RawSink
from services.download.service import download_delivery
from services.download.settings import Settings
from shared.connectors import source_access
from shared.runtime import aws
from shared.runtime.catalogue import Step
from shared.runtime.deliveries import Delivery
from shared.runtime.tasks import TaskCallbacks, TaskKind, task_lambda_handler
from shared.store.db import Database

settings = Settings.from_env()


@cache
def database() -> Database:
    return Database(settings.consumer.database_url, application_name="sourceflow-download")


def download(request: dict[str, Any], delivery: Delivery) -> dict[str, Any]:
    return download_delivery(
        request,
        delivery,
        db=database(),
        connector_for=source_access(settings.sources).connector,
        sink=S3RawSink(aws.client("s3"), settings.raw_bucket, settings.raw_gzip_level),
        send_heartbeat=TaskCallbacks(aws.client("stepfunctions")).heartbeat,
        lease=timedelta(seconds=settings.lock_lease_seconds),
        claim_seconds=settings.claim_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        part_max_records=settings.part_max_records,
        stop_margin_seconds=settings.stop_margin_seconds,
        vendor_max_wait_seconds=settings.vendor_max_wait_seconds,
        vendor_slot_wait_seconds=settings.vendor_slot_wait_seconds,
    )


lambda_handler = task_lambda_handler(
    TaskKind("download-request", "download-result", Step.DOWNLOAD, download),
    database=database,
    settings=settings.consumer,
)
