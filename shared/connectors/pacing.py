"""How a connector paces itself to a vendor: how long a throttled page waits and what it waits
with, and the vendor's concurrency slot a download holds while it reads.

`Pacing` is a set of ports. Download passes its own (services/download/service.py): a wait that
keeps heartbeating, so that a vendor's Retry-After does not time the task out, and the slots of
public.vendor_limit, held across workers in the database (shared/store/vendor_limits.py).
`UNPACED` waits with `time.sleep` and holds no slot: for validation, which reads no page, and the
benchmarks. A vendor is named by `vendor_host`, the one spelling the limits table is keyed by.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from shared.rules.throttling import ThrottlePolicy
from shared.runtime.catalogue import VENDOR_MAX_WAIT_SECONDS

_DEFAULT_PORTS = {"http": 80, "https": 443}
DEFAULT_THROTTLE = ThrottlePolicy(VENDOR_MAX_WAIT_SECONDS)


def _no_slot(host: str) -> AbstractContextManager[object]:
    return nullcontext()


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Pacing:
    """The ports a connector paces itself with."""

    throttle: ThrottlePolicy = DEFAULT_THROTTLE
    # Waits this many seconds (download's keeps heartbeating meanwhile).
    wait: Callable[[float], None] = field(default=time.sleep, repr=False)
    # Holds one of the vendor's concurrency slots (by vendor_host) while the context is open.
    slot: Callable[[str], AbstractContextManager[object]] = field(default=_no_slot, repr=False)
    # A number in [0, 1): the jitter's draw.
    random: Callable[[], float] = field(default=random.random, repr=False)
    # Now, which an HTTP-date Retry-After is counted from.
    now: Callable[[], datetime] = field(default=_utc_now, repr=False)


UNPACED = Pacing()


def vendor_host(url: str) -> str:
    """The vendor a URL (or a bare `host[:port]`) names: its host name in lower case, with its
    port when that is not the scheme's default — "api.example.com", "127.0.0.1:8123",
    "[::1]:8443". ValueError when it names no host or its port is not one."""
    split = urlsplit(url if "//" in url else f"//{url}")
    try:
        host, port = split.hostname, split.port
    except ValueError:
        host = port = None
    if not host or any(char.isspace() or char in "/@" for char in host):
        raise ValueError(f"{url!r} names no host and port; give host[:port] or the API's URL")
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return host if port is None or port == _DEFAULT_PORTS.get(split.scheme) else f"{host}:{port}"
