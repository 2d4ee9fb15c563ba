from __future__ import annotations

from dataclasses import dataclass

from shared.settings import RespecsSettings, TaskSettings


@dataclass(frozen=True)
class Settings:
    task: TaskSettings
    respecs: RespecsSettings

    @classmethod
    def from_env(cls) -> Settings:
        return cls(task=TaskSettings.from_env(), respecs=RespecsSettings.from_env())
