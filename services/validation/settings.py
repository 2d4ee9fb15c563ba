from __future__ import annotations

from dataclasses import dataclass

from shared.settings import ConsumerSettings, RespecsSettings, env_int


@dataclass(frozen=True)
class Settings:
    consumer: ConsumerSettings
    respecs: RespecsSettings
    lock_lease_seconds: int

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            consumer=ConsumerSettings.from_env(),
            respecs=RespecsSettings.from_env(),
            lock_lease_seconds=env_int("LOCK_LEASE_SECONDS", 900, minimum=30),
        )
