"""Download's SQL (the run it serves, its claim on the download, the parts it commits with
where its source resumes, the versions it lands) and its S3 writer; the run's status and the
source's lease are written by `shared.store.runs`."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError
from isal import igzip
from psycopg2.extras import Json, execute_values

from shared.connectors.base import Lines, Position
from shared.errors import TransientError
from shared.rules.versions import VERSION_COUNTS, Version
from shared.runtime.catalogue import RAW_GZIP_LEVEL
from shared.store.db import fetch_one
from shared.store.runs import RunStatus
from shared.timefmt import isoformat


@dataclass(frozen=True)
class WrittenObject:
    key: str
    records: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SpooledPart:
    """A part compressed and described (`written`), not yet in the bucket: `upload` puts it
    there, `discard` drops it instead; either once."""

    written: WrittenObject
    upload: Callable[[], None]
    discard: Callable[[], None]


def load_run(cur: Any, execution_arn: str) -> dict[str, Any] | None:
    return fetch_one(
        cur,
        """
        SELECT r.*, s.source_type, s.connection, s.locked_by
          FROM public.source_run r JOIN public.source s USING (source_id)
         WHERE r.execution_arn = %s
        """,
        (execution_arn,),
    )


def claim_download(cur: Any, execution_arn: str, claim: Any) -> dict[str, Any] | None:
    """Claim the run's download for this delivery, and count the invocation; None when
    claimed, else the live claim."""
    cur.execute(
        """
        UPDATE public.source_run
           SET download_attempt = %(attempt)s, download_message_id = %(message_id)s,
               download_claimed_until = now() + %(ttl)s,
               download_continuation = %(continuation)s,
               download_invocations = COALESCE(download_invocations, 0) + 1
         WHERE execution_arn = %(arn)s AND status = %(running)s
           AND (download_claimed_until IS NULL OR download_claimed_until < now()
                OR download_attempt = %(attempt)s)
        """,
        {
            "attempt": claim.attempt,
            "message_id": claim.message_id,
            "ttl": claim.ttl,
            "continuation": claim.continuation,
            "arn": execution_arn,
            "running": RunStatus.RUNNING,
        },
    )
    if cur.rowcount == 1:
        return None
    cur.execute(
        "SELECT download_message_id, download_claimed_until, download_continuation"
        " FROM public.source_run WHERE execution_arn = %s",
        (execution_arn,),
    )
    return dict(cur.fetchone())


def release_claim(cur: Any, execution_arn: str, attempt: str) -> None:
    cur.execute(
        """
        UPDATE public.source_run SET download_claimed_until = now()
         WHERE execution_arn = %s AND download_attempt = %s
        """,
        (execution_arn, attempt),
    )


def renew_claim(cur: Any, execution_arn: str, claim: Any, progress: Any = None) -> bool:
    """Extend this delivery's claim, and note how far it has got."""
    cur.execute(
        """
        UPDATE public.source_run
           SET download_claimed_until = now() + %s,
               progress_records = COALESCE(%s, progress_records),
               progress_bytes = COALESCE(%s, progress_bytes)
         WHERE execution_arn = %s AND download_attempt = %s
        """,
        (
            claim.ttl,
            progress.records if progress else None,
            progress.bytes if progress else None,
            execution_arn,
            claim.attempt,
        ),
    )
    return bool(cur.rowcount == 1)


@dataclass(frozen=True)
class Checkpoint:
    """A part committed (or none, when an invocation stopped with nothing landed since its
    last part), the position the source resumes from after it, and the run's tally then."""

    sequence: int
    written: WrittenObject | None
    position: Position
    tally: Mapping[str, Any]


def checkpoints(cur: Any, execution_arn: str) -> list[Checkpoint]:
    """The run's committed checkpoints, in order."""
    cur.execute(
        "SELECT * FROM public.download_checkpoint WHERE execution_arn = %s ORDER BY sequence",
        (execution_arn,),
    )
    return [
        Checkpoint(
            row["sequence"],
            WrittenObject(
                row["object_key"], row["object_records"], row["object_bytes"], row["object_sha256"]
            )
            if row["object_key"] is not None
            else None,
            row["position"],
            row["tally"],
        )
        for row in cur.fetchall()
    ]


def commit_checkpoint(
    cur: Any, execution_arn: str, attempt: str, checkpoint: Checkpoint, *, last: bool
) -> bool:
    """Commit the checkpoint and the progress it reports, only for the delivery holding the
    download's claim while its execution holds the source's lock; with `last`, the invocation
    stops after it, and gives its claim back. False: the claim or the lock was lost."""
    written = checkpoint.written
    cur.execute(
        """
        INSERT INTO public.download_checkpoint
            (execution_arn, sequence, object_key, object_records, object_bytes, object_sha256,
             position, tally, download_attempt)
        SELECT r.execution_arn, %(sequence)s, %(key)s, %(records)s, %(bytes)s, %(sha256)s,
               %(position)s, %(tally)s, r.download_attempt
          FROM public.source_run r JOIN public.source s ON s.source_id = r.source_id
         WHERE r.execution_arn = %(arn)s AND r.status = %(running)s
           AND r.download_attempt = %(attempt)s AND s.locked_by = r.execution_arn
        """,
        {
            "sequence": checkpoint.sequence,
            "key": written.key if written else None,
            "records": written.records if written else None,
            "bytes": written.bytes if written else None,
            "sha256": written.sha256 if written else None,
            "position": Json(checkpoint.position),
            "tally": Json(dict(checkpoint.tally)),
            "arn": execution_arn,
            "running": RunStatus.RUNNING,
            "attempt": attempt,
        },
    )
    if cur.rowcount != 1:
        return False
    cur.execute(
        """
        UPDATE public.source_run
           SET progress_records = %(records)s, progress_bytes = %(bytes)s,
               download_claimed_until = CASE WHEN %(last)s THEN now()
                                             ELSE download_claimed_until END
         WHERE execution_arn = %(arn)s
        """,
        {
            "records": checkpoint.tally["records"],
            "bytes": checkpoint.tally["bytes"],
            "last": last,
            "arn": execution_arn,
        },
    )
    return True


def holds_claim(cur: Any, execution_arn: str, attempt: str) -> bool:
    cur.execute(
        "SELECT 1 FROM public.source_run WHERE execution_arn = %s AND download_attempt = %s",
        (execution_arn, attempt),
    )
    return cur.fetchone() is not None


def result_fields(run: Mapping[str, Any]) -> dict[str, Any]:
    fields = {
        "source_id": run["source_id"],
        "execution_arn": run["execution_arn"],
        "records": run["records"],
        "bytes": run["bytes"],
        "objects": run["objects"],
        "manifest_key": run["manifest_key"],
        "max_last_modified": (
            isoformat(run["max_last_modified"]) if run["max_last_modified"] else None
        ),
    }
    # NULL: downloaded before the count existed
    for count in ("malformed_records", *VERSION_COUNTS):
        if run[count] is not None:
            fields[count] = run[count]
    return fields


def landed_versions(cur: Any, source_id: str, after: datetime) -> set[Version]:
    """The versions that succeeded runs of the source landed, stamped after `after`."""
    cur.execute(
        """
        SELECT v.last_modified, v.key_digest
          FROM public.landed_version v JOIN public.source_run r USING (execution_arn)
         WHERE v.source_id = %s AND v.last_modified > %s AND r.status = %s
        """,
        (source_id, after, RunStatus.SUCCEEDED),
    )
    return {(row["last_modified"], bytes(row["key_digest"])) for row in cur.fetchall()}


def own_landed(cur: Any, source_id: str, execution_arn: str) -> set[Version]:
    """The versions the run listed with the parts it committed (`record_landed`)."""
    cur.execute(
        "SELECT last_modified, key_digest FROM public.landed_version"
        " WHERE source_id = %s AND execution_arn = %s",
        (source_id, execution_arn),
    )
    return {(row["last_modified"], bytes(row["key_digest"])) for row in cur.fetchall()}


def record_landed(
    cur: Any, source_id: str, execution_arn: str, versions: Iterable[Version]
) -> None:
    """List the versions this run landed; they count once the run has succeeded. A version an
    unfinished or failed run listed is taken over."""
    # execute_values takes one placeholder (the rows): the status is formatted in, from the enum.
    execute_values(
        cur,
        f"""
        INSERT INTO public.landed_version (source_id, last_modified, key_digest, execution_arn)
        VALUES %s
        ON CONFLICT (source_id, last_modified, key_digest) DO UPDATE
           SET execution_arn = EXCLUDED.execution_arn
         WHERE NOT EXISTS (
               SELECT 1 FROM public.source_run r
                WHERE r.execution_arn = landed_version.execution_arn
                  AND r.status = '{RunStatus.SUCCEEDED}')
        """,
        [(source_id, stamp, digest, execution_arn) for stamp, digest in versions],
        page_size=1000,
    )


def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None


_LIBC = _libc()


def give_back_freed_memory() -> None:
    """Hand the heap's free memory back to the system (glibc's malloc_trim): a download's
    pages, a few MB each, come and go on three threads, and the heap kept what they freed, so
    that its peak memory grew with its length (122 MB at 100k records, 143 MB at 1M; with this
    after each part, 122 and 134-137, about 5% slower: mapping each page buffer on its own
    instead held it to 117-132 but cost 20-45%). Nothing to do off glibc."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


class _BackgroundWriter:
    """Hands chunks to `write` on another thread: the compressor releases the GIL while it
    works, so compression runs beside the fetching and checking of the next pages."""

    def __init__(self, write: Callable[[Lines], Any], depth: int = 4) -> None:
        self._write = write
        self._chunks: queue.Queue[Lines | None] = queue.Queue(maxsize=depth)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="gzip-writer", daemon=True)

    def __enter__(self) -> Callable[[Lines], None]:
        self._thread.start()
        return self._put

    def __exit__(self, *exc_info: object) -> None:
        self._chunks.put(None)
        self._thread.join()
        if self._failure is not None and exc_info[0] is None:
            raise self._failure

    def _put(self, chunk: Lines) -> None:
        if self._failure is not None:
            raise self._failure
        self._chunks.put(chunk)

    def _drain(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            if self._failure is None:
                try:
                    self._write(chunk)
                except BaseException as exc:  # reported to the producer on its next put
                    self._failure = exc


class S3RawSink:
    """Writes gzip JSON-lines parts (vendor field names kept) and the manifest to S3.

    A part is compressed into a temporary file first, so memory stays flat however many
    records a part holds, and its sha256 and size are known before the upload. Compression is
    ISA-L's gzip (`isal`) at `gzip_level` (0-3; `RAW_GZIP_LEVEL`): any gzip reader inflates it.
    """

    def __init__(self, s3_client: Any, bucket: str, gzip_level: int = RAW_GZIP_LEVEL) -> None:
        self._s3, self._bucket, self._gzip_level = s3_client, bucket, gzip_level

    def write_part(self, key: str, chunks: Iterable[tuple[Lines, int]]) -> WrittenObject:
        """One part of records, compressed and uploaded."""
        spooled = self.spool_part(key, chunks)
        spooled.upload()
        return spooled.written

    def spool_part(self, key: str, chunks: Iterable[tuple[Lines, int]]) -> SpooledPart:
        """One part of records, compressed: chunks of JSON lines (each line ending in a
        newline), each with how many lines it holds. Its upload is left to the caller, who may
        do it while the next part is read."""
        count = 0
        spool = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the upload or discard)
        try:
            with (
                igzip.GzipFile(
                    fileobj=spool, mode="wb", compresslevel=self._gzip_level, mtime=0
                ) as gz,
                _BackgroundWriter(gz.write) as write,
            ):
                for chunk, lines in chunks:
                    write(chunk)
                    count += lines
            size = spool.tell()
            spool.seek(0)
            digest = hashlib.file_digest(spool, "sha256").hexdigest()  # type: ignore[arg-type]
        except BaseException:
            spool.close()
            raise
        give_back_freed_memory()  # the part's pages are all gone now
        return SpooledPart(
            WrittenObject(key=key, records=count, bytes=size, sha256=digest),
            partial(self._upload, key, spool),
            spool.close,
        )

    def _upload(self, key: str, spool: IO[bytes]) -> None:
        try:
            spool.seek(0)
            self._put(key, spool, content_type="application/x-ndjson", content_encoding="gzip")
        finally:
            spool.close()

    def write_manifest(self, key: str, manifest: Mapping[str, Any]) -> None:
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        self._put(key, body, content_type="application/json")

    def _put(self, key: str, body: Any, *, content_type: str, content_encoding: str = "") -> None:
        extra = {"ContentEncoding": content_encoding} if content_encoding else {}
        try:
            self._s3.put_object(
                Bucket=self._bucket, Key=key, Body=body, ContentType=content_type, **extra
            )
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"cannot write s3://{self._bucket}/{key}: {exc}") from exc
