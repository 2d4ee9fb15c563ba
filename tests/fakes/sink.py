"""Download's sink: the raw bucket's parts and manifests."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.download.adapters import SpooledPart, WrittenObject
from shared.connectors.base import Lines


@dataclass
class FakeSink:
    """Keeps parts and manifests in memory; sizes and checksums are of gzip JSON lines."""

    parts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: int = 0

    def write_part(self, key: str, chunks: Iterable[tuple[Lines, int]]) -> WrittenObject:
        written = list(chunks)
        lines = b"".join(chunk for chunk, _ in written)
        assert lines.endswith(b"\n"), "every line ends in a newline"
        kept = [json.loads(line) for line in lines.splitlines()]
        assert len(kept) == sum(count for _, count in written), "each chunk's count is its lines"
        body = gzip.compress(lines, mtime=0)
        self.parts[key] = kept
        self.writes += 1
        return WrittenObject(
            key=key, records=len(kept), bytes=len(body), sha256=hashlib.sha256(body).hexdigest()
        )

    def spool_part(self, key: str, chunks: Iterable[tuple[Lines, int]]) -> SpooledPart:
        """`write_part` (kept in memory at once): its upload and discard do nothing."""
        return SpooledPart(self.write_part(key, chunks), upload=_nothing, discard=_nothing)

    def write_manifest(self, key: str, manifest: Mapping[str, Any]) -> None:
        self.manifests[key] = json.loads(json.dumps(manifest))
        self.writes += 1


def _nothing() -> None:
    pass
