"""The console's settings: where it listens on this machine, and the cloud function's, read
from its environment once, at cold start."""

from __future__ import annotations

from collections.abc import Mapping

from ops.config import CONFIG_KEYS, OperatorConfig

DEFAULT_HOST = "127.0.0.1"  # this machine only: a sign-in travels in clear over HTTP
DEFAULT_PORT = 8765

# What infra/templates/console.yaml sets, checked at cold start so that a bad deploy fails at
# once, naming what is missing.
REQUIRED = ("DATABASE_URL", "STATE_MACHINE_ARN", "EVENT_BUS_NAME", "SOURCEFLOW_STAGE")


def from_env(environ: Mapping[str, str]) -> OperatorConfig:
    config = OperatorConfig(
        {key: environ[key] for key in CONFIG_KEYS if environ.get(key)},
        "the function's environment",
    )
    for key in REQUIRED:
        config.require(key)
    return config
