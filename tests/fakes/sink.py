"""Download's sink: the raw bucket's parts and manifests."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.download.adapters import WrittenObject


@dataclass
class FakeSink:
    """Keeps parts and manifests in memory; sizes and checksums are of gzip JSON lines."""

    parts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: int = 0

    def write_part(self, key: str, lines: Iterable[bytes]) -> WrittenObject:
        written = list(lines)
        kept = [json.loads(line) for line in written]
        body = gzip.compress(b"".join(line + b"\n" for line in written), mtime=0)
        self.parts[key] = kept
        self.writes += 1
        return WrittenObject(
            key=key, records=len(kept), bytes=len(body), sha256=hashlib.sha256(body).hexdigest()
        )

    def write_manifest(self, key: str, manifest: Mapping[str, Any]) -> None:
        self.manifests[key] = json.loads(json.dumps(manifest))
        self.writes += 1
