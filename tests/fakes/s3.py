"""S3 as a connector reads it: listing pages and objects."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.fakes.aws import client_error


@dataclass
class FakeS3:
    """ListObjectsV2 (`page_size` keys a page), GetObject and PutObject over in-memory objects;
    keeps the keys it was asked to read. `failure` is raised by every call when set; `deleted`
    objects are listed but gone by the time they are read. An object put without its own
    LastModified carries `modified`."""

    modified: datetime
    objects: dict[str, tuple[bytes, datetime]] = field(default_factory=dict)
    page_size: int = 2
    failure: Exception | None = None
    deleted: set[str] = field(default_factory=set)
    read: list[str] = field(default_factory=list)
    pages_listed: int = 0

    def put(self, key: str, lines: list[str], modified: datetime | None = None) -> None:
        self.objects[key] = ("".join(lines).encode(), modified or self.modified)

    def etag(self, key: str) -> str:
        return f'"{hashlib.md5(self.objects[key][0]).hexdigest()}"'

    def list_objects_v2(self, *, Bucket: str, Prefix: str, MaxKeys: int) -> dict[str, Any]:
        if self.failure is not None:
            raise self.failure
        keys = sorted(key for key in self.objects if key.startswith(Prefix))[:MaxKeys]
        return {"KeyCount": len(keys), "Contents": [{"Key": key} for key in keys]}

    def get_paginator(self, operation: str) -> FakeS3:
        assert operation == "list_objects_v2"
        return self

    def paginate(
        self, *, Bucket: str, Prefix: str, StartAfter: str = ""
    ) -> Iterator[dict[str, Any]]:
        if self.failure is not None:
            raise self.failure
        keys = sorted(key for key in self.objects if key.startswith(Prefix) and key > StartAfter)
        for first in range(0, len(keys), self.page_size):
            self.pages_listed += 1
            page = keys[first : first + self.page_size]
            yield {
                "Contents": [
                    {"Key": k, "LastModified": self.objects[k][1], "ETag": self.etag(k)}
                    for k in page
                ]
            }

    def put_object(self, *, Bucket: str, Key: str, Body: Any, **_: Any) -> None:
        """As download's raw-bucket writer puts a part (a file) or a manifest (bytes)."""
        self.objects[Key] = (Body if isinstance(Body, bytes) else Body.read(), self.modified)

    def get_object(
        self, *, Bucket: str, Key: str, Range: str = "", IfMatch: str = ""
    ) -> dict[str, Any]:
        """S3's answers to a ranged read (`bytes=N-`) that is conditional on the ETag."""
        if Key not in self.objects or Key in self.deleted:
            raise client_error("NoSuchKey", "GetObject")
        if IfMatch and IfMatch != self.etag(Key):
            raise client_error("PreconditionFailed", "GetObject")
        body = self.objects[Key][0]
        start = int(Range.removeprefix("bytes=").removesuffix("-")) if Range else 0
        if start and start >= len(body):
            raise client_error("InvalidRange", "GetObject")
        self.read.append(Key)
        return {"Body": io.BytesIO(body[start:])}
