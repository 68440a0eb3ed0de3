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
grow for ever and starve the collector. So a collector announces itself
(`announce`: a NOTIFY on CHANNEL, before it asks for the lock); a holder hears
it on its connection (LISTEN) and then looks every POLL seconds whether anyone
waits for the lock (pg_locks: the announcement comes just before the
collector's request is queued, but on a loaded machine that "just" can be
seconds), until it sees one or ANNOUNCED seconds have passed (a collector that
announced and never asked is gone). Once it sees one waiting it
admits no more pins, lets go when the last one is released, and asks again,
behind the collector. Otherwise a hold sends nothing: the holder sleeps on its
connection's socket and on a pipe the last release writes to.
"""
from __future__ import annotations

import os
import select
import threading
import time
from typing import Any, Callable

from ...errors import RegistryError

CHANNEL = "soko_registry_gc"  # collectors NOTIFY on it before they ask for the pin lock
ANNOUNCED = 30.0  # seconds after an announcement during which a hold looks in pg_locks, until it sees the collector
POLL = 0.025  # how often it looks then

_WAITERS = ("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 2 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))")


def announce(conn: Any) -> None:
    """(a collector, autocommit, before it asks for the pin lock) Holders stop admitting pins."""
    conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))


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
        self._heard = -ANNOUNCED  # when a collector last announced itself (monotonic)
        self._sleeping = False  # the holder waits on its socket and the wake pipe
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

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
                self._wake()

    def _wake(self) -> None:
        """(under the condition) The holder, if asleep on its socket, looks again."""
        if self._sleeping:
            self._sleeping = False
            try:
                os.write(self._wake_w, b"!")
            except BlockingIOError:
                pass  # woken already

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
                self._hold()
                if self._held:
                    self._held = self._open = False
                    self._outside(self._unlock)

    def _hold(self) -> None:
        """While pins are held (new ones join while open); returns at the last release, or with
        _held False when the connection broke (its lock went with it)."""
        while not self._done():
            if self._outside(self._listen):
                self._held = self._open = False
                return
            if self._open and time.monotonic() - self._heard < ANNOUNCED:
                waits: list[bool] = []
                if self._outside(lambda: waits.append(self._collector_waits())):
                    self._held = self._open = False
                    return
                if waits[0]:
                    self._open = False  # pins arriving now wait for the collector
                    self._heard = -ANNOUNCED  # seen: the next hold need not look for it
                else:
                    self._cond.wait_for(self._done, timeout=POLL)
                continue
            if self._done():
                return
            self._sleeping = True
            self._cond.release()
            try:
                self._sleep()
            except Exception:  # noqa: BLE001 - the connection closed under it: the next _listen says so
                pass
            finally:
                self._cond.acquire()
                self._sleeping = False

    def _listen(self) -> None:
        """(outside the condition) The announcements the connection has received, heard."""
        if any(True for _n in self._conn.notifies(timeout=0)):
            with self._cond:
                self._heard = time.monotonic()

    def _sleep(self) -> None:
        """(outside the condition) Until the connection has something to read (an announcement)
        or the wake pipe is written to (the last release, close)."""
        poller = select.poll()
        poller.register(self._conn.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        poller.poll()
        try:
            os.read(self._wake_r, 64)
        except BlockingIOError:
            pass

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
            c.execute(f"LISTEN {CHANNEL}")
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
            self._wake()
            t = self._thread
        if t is not None:
            t.join(2)
            if t.is_alive() and self._conn is not None:
                self._conn.cancel()
                t.join(10)
        if self._conn is not None:
            self._conn.close()
        if t is None or not t.is_alive():
            os.close(self._wake_r)
            os.close(self._wake_w)


class CountedPin:
    """One pin of the holder's count; release() is a decrement (idempotent)."""

    def __init__(self, holder: PinHolder):
        self._holder: PinHolder | None = holder

    def release(self) -> None:
        if self._holder is not None:
            holder, self._holder = self._holder, None
            holder._unpin()
