from __future__ import annotations

from dataclasses import dataclass

from shared.runtime.catalogue import (
    CLOUD_TIMEOUTS,
    PART_MAX_RECORDS,
    RAW_GZIP_LEVEL,
    VENDOR_MAX_WAIT_SECONDS,
    VENDOR_SLOT_WAIT_SECONDS,
)
from shared.runtime.settings import (
    ConsumerSettings,
    SettingsError,
    SourceAccessSettings,
    env_float,
    env_int,
    env_str,
    lock_lease_seconds,
)


@dataclass(frozen=True)
class Settings:
    consumer: ConsumerSettings
    sources: SourceAccessSettings
    raw_bucket: str
    # Below the state machine's HeartbeatSeconds for Download, with room for a slow page.
    heartbeat_seconds: float
    lock_lease_seconds: int
    part_max_records: int
    # One setting per deployment: faster downloads against smaller raw objects.
    raw_gzip_level: int
    # A delivery's claim on a download (and its message's visibility) lapses this long after
    # its last heartbeat: a few heartbeats, so one slow page does not lose it.
    claim_seconds: int
    # An invocation stops to be continued when what it has left falls below this.
    stop_margin_seconds: float
    # The most a page waits on a vendor's 429 or 503, and a download for its vendor's slot.
    vendor_max_wait_seconds: float
    vendor_slot_wait_seconds: float

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            consumer=ConsumerSettings.from_env(),
            sources=SourceAccessSettings.from_env(),
            raw_bucket=env_str("RAW_BUCKET"),
            heartbeat_seconds=env_float(
                "HEARTBEAT_SECONDS", CLOUD_TIMEOUTS.heartbeat_interval_seconds, minimum=0.1
            ),
            lock_lease_seconds=lock_lease_seconds(),
            part_max_records=env_int("PART_MAX_RECORDS", PART_MAX_RECORDS, minimum=1),
            raw_gzip_level=gzip_level(env_int("RAW_GZIP_LEVEL", RAW_GZIP_LEVEL)),
            claim_seconds=env_int(
                "DOWNLOAD_CLAIM_SECONDS", CLOUD_TIMEOUTS.download_claim_seconds, minimum=2
            ),
            stop_margin_seconds=env_float(
                "DOWNLOAD_STOP_MARGIN_SECONDS", CLOUD_TIMEOUTS.download_stop_margin_seconds
            ),
            vendor_max_wait_seconds=env_float(
                "VENDOR_MAX_WAIT_SECONDS", VENDOR_MAX_WAIT_SECONDS, minimum=1.0
            ),
            vendor_slot_wait_seconds=env_float(
                "VENDOR_SLOT_WAIT_SECONDS", VENDOR_SLOT_WAIT_SECONDS, minimum=0.0
            ),
        )


# ISA-L's gzip levels (isal.igzip).
GZIP_LEVELS = range(4)


def gzip_level(level: int) -> int:
    if level not in GZIP_LEVELS:
        raise SettingsError(
            f"environment variable RAW_GZIP_LEVEL={level} is not a gzip level of ISA-L's; "
            f"expected {GZIP_LEVELS.start} to {GZIP_LEVELS.stop - 1}"
        )
    return level
