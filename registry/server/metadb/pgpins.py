"""PostgreSQL pins: one connection per process holds gc's pin lock shared while
any pin of this process is held, and counts them.

A pin costs no connection of its own (concurrent pushes were bounded only by
the server's connection limit) and its release no round trip: releasing is a
decrement, done on the event loop, and the holder's own thread lets the lock go
when the count reaches zero. That unlock never waits behind a pin: pins waiting
for the lock (behind a collector) wait in the pin pool, the unlock the
collector waits for runs here.

PostgreSQL queues a shared request behind a waiting exclusive one, so pushes
arriving while gc waits used to wait for it; one session's count would instead
grow for ever and starve the collector. So while the holder holds the lock it
looks every POLL seconds whether anyone waits for it (pg_locks); if so it
admits no more pins, lets go when the last one is released, and asks again,
behind the collector.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from ...errors import RegistryError

POLL = 0.025  # how often a hold looks for a collector waiting (what a collector may wait more than before)

_WAITERS = ("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 2 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))")


class PinHolder:
    """The process's share of one session advisory lock, counted."""

    def __init__(self, connect: Callable[[], Any], key: tuple[int, int]):
        self._connect = connect  # a new autocommit connection (RegistryError if it cannot)
        self._key = key
        self._cond = threading.Condition()
        self._count = 0  # pins held
        self._waiting = 0  # pins waiting for the lock
        self._held = False  # the connection holds the lock
        self._open = False  # and admits new pins (False: a collector waits)
        self._failures = 0  # lock attempts that failed (their waiters raise)
        self._failure = ""
        self._stop = False
        self._conn: Any = None
        self._thread: threading.Thread | None = None

    def pin(self) -> "CountedPin":
        """(worker thread) Waits while the lock is not held: the holder takes it."""
        with self._cond:
            if self._stop:
                raise RegistryError("metadata closed")
            if not (self._held and self._open):
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="soko-registry-pins", daemon=True)
                    self._thread.start()
                failures = self._failures
                self._waiting += 1
                self._cond.notify_all()
                try:
                    self._cond.wait_for(lambda: (self._held and self._open) or self._failures != failures
                                        or self._stop)
                finally:
                    self._waiting -= 1
                if not (self._held and self._open):
                    raise RegistryError(self._failure or "metadata closed")
            self._count += 1
        return CountedPin(self)

    def _unpin(self) -> None:
        """(any thread, the event loop too) No round trip: the holder lets go."""
        with self._cond:
            self._count -= 1
            if self._count == 0:
                self._cond.notify_all()

    def _run(self) -> None:
        with self._cond:
            while True:
                self._cond.wait_for(lambda: self._waiting or self._stop)
                if self._stop:
                    return
                failure = self._outside(self._lock)
                if failure:
                    self._failures += 1
                    self._failure = failure
                    self._cond.notify_all()
                    self._cond.wait_for(lambda: self._stop, timeout=0.1)  # its waiters raise; no retry storm
                    continue
                self._held = self._open = True
                self._cond.notify_all()
                # hold while pins are held (new ones join while open); let go at the last release
                while not self._cond.wait_for(self._done, timeout=POLL):
                    if self._open:
                        waits: list[bool] = []
                        if self._outside(lambda: waits.append(self._collector_waits())):
                            self._held = self._open = False  # the connection broke: so did its lock
                            break
                        if waits[0]:
                            self._open = False  # pins arriving now wait for the collector
                if self._held:
                    self._held = self._open = False
                    self._outside(self._unlock)

    def _done(self) -> bool:
        """The hold may end: no pin held and none about to join it."""
        return self._stop or (self._count == 0 and not (self._open and self._waiting))

    def _outside(self, fn: Callable[[], None]) -> str:
        """fn() (a round trip) without the condition's lock; a driver error as its
        first line (the connection is then dropped: the lock went with it)."""
        self._cond.release()
        try:
            fn()
            return ""
        except RegistryError as e:  # from connect: one line already
            return str(e)
        except Exception as e:  # the driver's (or anything else: waiting pins must hear of it)
            if self._conn is not None:
                self._conn.close()
            text = str(e).strip()
            return f"metadata: {text.splitlines()[0] if text else type(e).__name__}"
        finally:
            self._cond.acquire()

    def _lock(self) -> None:
        c = self._conn
        if c is None or c.closed or c.broken:
            c = self._conn = self._connect()
        c.execute("SELECT pg_advisory_lock_shared(%s, %s)", self._key)

    def _unlock(self) -> None:
        self._conn.execute("SELECT pg_advisory_unlock_shared(%s, %s)", self._key)

    def _collector_waits(self) -> bool:
        return bool(self._conn.execute(_WAITERS, self._key).fetchone()[0])

    def close(self) -> None:
        """Stop the holder (a lock it is still waiting for is cancelled)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            t = self._thread
        if t is not None:
            t.join(2)
            if t.is_alive() and self._conn is not None:
                self._conn.cancel()
                t.join(10)
        if self._conn is not None:
            self._conn.close()


class CountedPin:
    """One pin of the holder's count; release() is a decrement (idempotent)."""

    def __init__(self, holder: PinHolder):
        self._holder: PinHolder | None = holder

    def release(self) -> None:
        if self._holder is not None:
            holder, self._holder = self._holder, None
            holder._unpin()
