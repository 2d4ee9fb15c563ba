"""The one place that builds powertools' Logger, Tracer and Metrics.

Each deployable sets POWERTOOLS_SERVICE_NAME; the embedded stack also sets
POWERTOOLS_TRACE_DISABLED and POWERTOOLS_METRICS_DISABLED so nothing needs X-Ray or CloudWatch.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace="sourceflow")
