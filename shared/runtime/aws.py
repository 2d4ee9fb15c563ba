"""boto3 clients built once per process, with botocore's own retries (no hand-written loops).

The endpoint comes from `AWS_ENDPOINT_URL` when it is set (the embedded stack), which boto3
reads by itself; on AWS it is unset.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=5,
    read_timeout=30,
)


@cache
def client(service_name: str) -> Any:
    return boto3.session.Session().client(service_name, config=_CONFIG)


def error_code(exc: ClientError) -> str:
    """The AWS error's code (`ExecutionAlreadyExists`, `NoSuchKey`, …); "" when it has none."""
    return str(exc.response.get("Error", {}).get("Code", ""))
