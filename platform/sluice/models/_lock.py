"""The registry's writer lock: one writer per model at a time.

Threads of a process take a lock per model directory; on a local filesystem processes
also take ``flock`` on ``<model>/.lock`` (a remote filesystem has no such lock: there
only one process may write a model at a time). Waiting longer than ``timeout_s`` is
``StoreUnavailable``: retry later.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sluice.errors import StoreUnavailable

__all__ = ["writer_lock"]

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@contextmanager
def writer_lock(key: str, lock_path: str, local: bool, timeout_s: float) -> Iterator[None]:
    """Hold the model's writer lock: ``key`` names it in this process, ``lock_path`` is
    its ``flock`` file when ``local``."""
    with _THREAD_LOCKS_GUARD:
        thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
    if not thread_lock.acquire(timeout=timeout_s):
        raise StoreUnavailable(f"{key}: writer lock busy for {timeout_s}s")
    try:
        if not local:
            yield
            return
        with _flock(lock_path, timeout_s):
            yield
    finally:
        thread_lock.release()


@contextmanager
def _flock(path: str, timeout_s: float) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreUnavailable(
                        f"{path}: another writer has held the registry lock for {timeout_s}s; "
                        "retry later"
                    ) from None
                time.sleep(0.005)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
