from __future__ import annotations

from dataclasses import dataclass

from shared.runtime.settings import ConsumerSettings, RespecsSettings


@dataclass(frozen=True)
class Settings:
    consumer: ConsumerSettings
    respecs: RespecsSettings

    @classmethod
    def from_env(cls) -> Settings:
        return cls(consumer=ConsumerSettings.from_env(), respecs=RespecsSettings.from_env())
