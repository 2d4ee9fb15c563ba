"""The unit tier: no sockets, and the fixtures more than one unit test module needs (fakes of
AWS ports, metrics turned on)."""

from __future__ import annotations

import pytest
from hypothesis import settings

from shared.connectors import SourceAccess
from shared.runtime.secrets import Secrets
from tests.fakes import FakeSecretsManager, fake_access

# Hypothesis fails an example slower than its default deadline (200 ms): a timed assertion, which
# a rule's property test must not make — on a loaded machine (2 cores shared by two pytest
# workers and the e2e stacks) a correct rule failed that way. Speed is measured by `make bench`.
settings.register_profile("sourceflow", deadline=None)
settings.load_profile("sourceflow")


@pytest.fixture(autouse=True)
def no_sockets(socket_disabled: None) -> None:
    """Unit tests open no sockets (STYLE.md habit 9): pytest-socket makes every attempt raise
    SocketBlockedError. A port gets a fake (tests/fakes); a test that needs the network belongs
    to tests/integration."""


@pytest.fixture
def secrets_manager() -> FakeSecretsManager:
    return FakeSecretsManager()


@pytest.fixture
def access(secrets_manager: FakeSecretsManager) -> SourceAccess:
    """A connector's access in the cloud (no loopback), over the fake Secrets Manager."""
    return fake_access(secrets_manager)


@pytest.fixture
def secrets(access: SourceAccess) -> Secrets:
    return access.secrets


@pytest.fixture
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Powertools metrics printed to stdout, one JSON line each, whatever the environment says."""
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "sourceflow-test")
