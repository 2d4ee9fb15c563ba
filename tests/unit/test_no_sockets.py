"""The unit tier's guard (tests/unit/conftest.py): a unit test that opens a socket fails."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from pytest_socket import SocketBlockedError


def refused() -> pytest.WarningsRecorder:
    """pytest-socket warns as it refuses, so that a refusal the code under test swallows still
    shows."""
    return pytest.warns(UserWarning, match="A test tried to use socket")


def test_a_unit_test_cannot_open_a_socket() -> None:
    with refused(), pytest.raises(SocketBlockedError):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)


def test_a_unit_test_cannot_reach_a_server_either() -> None:
    with refused(), pytest.raises(SocketBlockedError):
        urllib.request.urlopen("http://127.0.0.1:9/", timeout=1)
