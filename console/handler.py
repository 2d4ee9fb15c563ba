"""The console's Lambda function behind API Gateway (IAM authorization): the same ASGI app
`sourceflow console` serves, through Mangum. Wiring only: settings at cold start, the app."""

from __future__ import annotations

import os
from typing import Any

from mangum import Mangum

from console.app import create_app
from console.auth import IamPrincipals
from console.settings import from_env


def with_stage_root(app: Any) -> Any:
    """Links and redirects start with the API's stage, as the browser's URL does."""

    async def staged(scope: Any, receive: Any, send: Any) -> None:
        stage = scope.get("aws.event", {}).get("requestContext", {}).get("stage")
        await app({**scope, "root_path": f"/{stage}" if stage else ""}, receive, send)

    return staged


app = create_app(IamPrincipals(from_env(os.environ)), secure_cookie=True)
lambda_handler = Mangum(with_stage_root(app), lifespan="off")
