from __future__ import annotations

from dataclasses import dataclass

from shared.runtime.catalogue import CLOUD_TIMEOUTS, RESPECS_APPROVAL_REQUIRED
from shared.runtime.settings import (
    ConsumerSettings,
    RespecsSettings,
    SourceAccessSettings,
    env_bool,
    env_int,
    env_str,
    lock_lease_seconds,
)


@dataclass(frozen=True)
class ApprovalSettings:
    """The Re-specs approval gate. On unless the deployment switches it off; the timeout must
    be the state machine's (ApprovalTimeoutSeconds), so that the lock outlasts the wait."""

    required: bool
    timeout_seconds: int
    event_bus_name: str

    @classmethod
    def from_env(cls) -> ApprovalSettings:
        return cls(
            required=env_bool("RESPECS_APPROVAL_REQUIRED", RESPECS_APPROVAL_REQUIRED),
            timeout_seconds=env_int(
                "APPROVAL_TIMEOUT_SECONDS", CLOUD_TIMEOUTS.approval_seconds, minimum=1
            ),
            event_bus_name=env_str("EVENT_BUS_NAME"),
        )


@dataclass(frozen=True)
class Settings:
    consumer: ConsumerSettings
    respecs: RespecsSettings
    approval: ApprovalSettings
    sources: SourceAccessSettings
    lock_lease_seconds: int

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            consumer=ConsumerSettings.from_env(),
            respecs=RespecsSettings.from_env(),
            approval=ApprovalSettings.from_env(),
            sources=SourceAccessSettings.from_env(),
            lock_lease_seconds=lock_lease_seconds(),
        )
