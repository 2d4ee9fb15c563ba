"""shared.connectors.pacing: the one spelling of a vendor, which its limit is keyed by."""

from __future__ import annotations

import pytest

from shared.connectors.pacing import vendor_host


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://API.Example.com/v2", "api.example.com"),
        ("https://api.example.com:443", "api.example.com"),
        ("http://api.example.com:80/", "api.example.com"),
        ("https://api.example.com:8443", "api.example.com:8443"),
        ("http://127.0.0.1:8123", "127.0.0.1:8123"),
        ("https://[::1]:8443/x", "[::1]:8443"),
        ("api.example.com", "api.example.com"),
        ("API.example.com:8443", "api.example.com:8443"),
    ],
)
def test_every_spelling_of_a_vendor_names_it_the_same_way(url: str, host: str) -> None:
    assert vendor_host(url) == host


@pytest.mark.parametrize("text", ["", "https://", "https://a b.example", "host:notaport", "/path"])
def test_what_names_no_host_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="host"):
        vendor_host(text)
