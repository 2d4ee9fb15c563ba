from __future__ import annotations

from dataclasses import dataclass

from shared.settings import TaskSettings


@dataclass(frozen=True)
class Settings:
    task: TaskSettings

    @classmethod
    def from_env(cls) -> Settings:
        return cls(task=TaskSettings.from_env())
