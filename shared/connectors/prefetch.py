"""Reading ahead: a source's next page is fetched on a thread of its own while the current one
is checked and compressed (the waits for the network and the compression release the GIL)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import TypeVar

T = TypeVar("T")
# How long the reading thread waits to hand over an item before it looks whether it should stop.
_STOP_POLL_SECONDS = 0.1


def prefetched(produce: Callable[[], Iterator[T]], ahead: int = 1) -> Generator[T, None, None]:
    """The items of `produce()`, made on a thread of their own at most `ahead` items before the
    caller asks for them. An error of the producer is raised to the caller once the items made
    before it are taken; a caller that stops early (or fails) stops the producer at its next
    item, and the producer's own clean-up (its `finally`, a `with` block) runs on its thread."""
    handed: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=ahead)
    stopped = threading.Event()

    def offer(done: bool, item: object) -> bool:
        while not stopped.is_set():
            try:
                handed.put((done, item), timeout=_STOP_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            items = produce()
            try:
                for item in items:
                    if not offer(False, item):
                        return
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # handed to the caller, raised there
            offer(True, exc)
            return
        offer(True, None)

    thread = threading.Thread(target=run, name="page-reader", daemon=True)
    thread.start()
    try:
        while True:
            done, item = handed.get()
            if not done:
                yield item  # type: ignore[misc]
            elif item is None:
                return
            else:
                raise item  # type: ignore[misc]
    finally:
        stopped.set()
