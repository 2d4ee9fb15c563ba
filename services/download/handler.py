"""Download Lambda: download-request messages → raw objects + manifest, with heartbeats."""

from __future__ import annotations

import uuid
from datetime import timedelta
from functools import cache
from typing import Any

from services.download.adapters import S3RawSink
from services.download.logic import Claim, Heartbeat, download_run, lease_renewal
from services.download.settings import Settings
from shared.connectors import connector_for
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
    db = database()
    callbacks = TaskCallbacks(aws.client("stepfunctions"))
    lease = timedelta(seconds=settings.lock_lease_seconds)
    claim = Claim(
        attempt=uuid.uuid4().hex,
        message_id=delivery.message_id,
        ttl=timedelta(seconds=settings.claim_seconds),
    )

    def renew() -> bool:
        # While this delivery is alive its message stays hidden and its claim stays live;
        # if it dies, both lapse together and the message's next delivery takes over.
        delivery.keep_hidden(settings.claim_seconds)
        return lease_renewal(
            db, request["source_id"], request["execution_arn"], lease, claim, heartbeat.progress
        )

    heartbeat = Heartbeat(
        send=lambda: callbacks.heartbeat(request["task_token"]),
        renew_lease=renew,
        interval_seconds=settings.heartbeat_seconds,
    )
    return download_run(
        request,
        db=db,
        connector_for=connector_for,
        sink=S3RawSink(aws.client("s3"), settings.raw_bucket),
        heartbeat=heartbeat,
        part_max_records=settings.part_max_records,
        claim=claim,
    )


lambda_handler = task_lambda_handler(
    TaskKind("download-request", "download-result", Step.DOWNLOAD, download),
    database=database,
    settings=settings.consumer,
)
