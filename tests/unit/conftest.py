"""Fixtures of the AWS ports that more than one unit test module needs."""

from __future__ import annotations

import pytest

from shared.secrets import Secrets
from tests.fakes import FakeSecretsManager


@pytest.fixture
def secrets_manager() -> FakeSecretsManager:
    return FakeSecretsManager()


@pytest.fixture
def secrets(secrets_manager: FakeSecretsManager) -> Secrets:
    return Secrets(secrets_manager)
