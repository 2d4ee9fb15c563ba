"""The one place that builds powertools' Logger, Tracer and Metrics.

Each deployable sets POWERTOOLS_SERVICE_NAME; the embedded stack also sets
POWERTOOLS_TRACE_DISABLED and POWERTOOLS_METRICS_DISABLED so nothing needs X-Ray or CloudWatch.
Metrics leave as CloudWatch embedded-metric-format lines in the function's log.

Every log line is redacted of the secret values the process read (shared.runtime.redaction),
whatever put the value there: a message, an extra key, an exception's text or its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

from shared.runtime.redaction import redacted

NAMESPACE = "sourceflow"


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON log lines, each redacted once it is whole."""

    def serialize(self, log: dict[str, Any]) -> str:  # type: ignore[override]
        return redacted(super().serialize(log))


logger = Logger(logger_formatter=RedactingFormatter())
tracer = Tracer()
metrics = Metrics(namespace=NAMESPACE)

Handler = TypeVar("Handler", bound=Callable[..., Any])


def log_metrics(handler: Handler) -> Handler:
    """`metrics.log_metrics`: the invocation's metrics are flushed when it ends. They are also
    forgotten then, because with POWERTOOLS_METRICS_DISABLED powertools keeps them instead, and
    prints them anyway once a hundred values pile up in a long-lived local worker."""
    flushing = metrics.log_metrics(handler)

    @functools.wraps(handler)
    def handle(*args: Any, **kwargs: Any) -> Any:
        try:
            return flushing(*args, **kwargs)
        finally:
            metrics.clear_metrics()

    return handle  # type: ignore[return-value]


@contextmanager
def dimensioned_metrics(**dimensions: str) -> Iterator[AmazonCloudWatchEMFProvider]:
    """Metrics that carry these dimensions, flushed as a metrics line of their own on the way out.

    Kept apart from `metrics` (the invocation's, flushed once when it ends) because one metrics
    line has one value per dimension, and each record of a batch may have other values.
    """
    line = AmazonCloudWatchEMFProvider(namespace=NAMESPACE)
    for name, value in dimensions.items():
        line.add_dimension(name=name, value=value)
    yield line
    line.flush_metrics()


def count_deliveries(received: int, failed: int) -> None:
    """How many SQS messages an invocation took, and how many it handed back for redelivery.

    Failed deliveries do not show in Lambda's Errors metric (the invocation itself succeeds
    with a partial batch response), so they are counted here."""
    metrics.add_metric(name="Deliveries", unit=MetricUnit.Count, value=received)
    metrics.add_metric(name="DeliveriesFailed", unit=MetricUnit.Count, value=failed)
