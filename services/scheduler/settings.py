from __future__ import annotations

from dataclasses import dataclass

from shared.runtime.settings import ConsumerSettings, env_str


@dataclass(frozen=True)
class Settings:
    consumer: ConsumerSettings
    state_machine_arn: str
    event_bus_name: str

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            consumer=ConsumerSettings.from_env(),
            state_machine_arn=env_str("STATE_MACHINE_ARN"),
            event_bus_name=env_str("EVENT_BUS_NAME"),
        )
