from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from services.scheduler.domain import Admission
from shared.rules.admission import InvalidAdmission, admission_capacity
from shared.runtime.catalogue import CLOUD_TIMEOUTS, DOWNLOAD_BATCH_SIZE, DOWNLOAD_CONCURRENCY
from shared.runtime.settings import ConsumerSettings, SettingsError, env_int, env_str


@dataclass(frozen=True)
class Settings:
    consumer: ConsumerSettings
    state_machine_arn: str
    event_bus_name: str
    admission: Admission

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            consumer=ConsumerSettings.from_env(),
            state_machine_arn=env_str("STATE_MACHINE_ARN"),
            event_bus_name=env_str("EVENT_BUS_NAME"),
            admission=admission_from_env(),
        )


def admission_from_env() -> Admission:
    """Admission from the download function's concurrency and batch size (the template passes
    its download sizing, the embedded stack its download workers) and the Validate timeout."""
    try:
        capacity = admission_capacity(
            env_int("DOWNLOAD_CONCURRENCY", DOWNLOAD_CONCURRENCY, minimum=1),
            env_int("DOWNLOAD_BATCH_SIZE", DOWNLOAD_BATCH_SIZE, minimum=1),
        )
    except InvalidAdmission as exc:
        raise SettingsError(f"DOWNLOAD_CONCURRENCY, DOWNLOAD_BATCH_SIZE: {exc}") from None
    validate_seconds = env_int(
        "VALIDATE_TIMEOUT_SECONDS", CLOUD_TIMEOUTS.validate_seconds, minimum=1
    )
    return Admission(capacity=capacity, validation_bound=timedelta(seconds=validate_seconds))
