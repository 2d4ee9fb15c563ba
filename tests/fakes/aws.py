"""What the AWS SDK raises, for fakes of its clients."""

from __future__ import annotations

from botocore.exceptions import ClientError


def client_error(code: str, operation: str) -> ClientError:
    """What botocore raises when an AWS API answers with error `code`."""
    return ClientError({"Error": {"Code": code, "Message": f"{code} (fake)"}}, operation)
