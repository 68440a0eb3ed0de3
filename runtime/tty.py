"""-t: relay between soko's terminal and the container's pty master.

soko's own terminal (when stdin is one) goes raw for the container's life,
so keys reach the container's line discipline untouched; window size
changes follow via SIGWINCH.
"""
from __future__ import annotations

import errno
import fcntl
import os
import signal
import termios
from typing import TYPE_CHECKING, Callable

from .waiting import readable

if TYPE_CHECKING:
    from .waiting import Forwarder


class Terminal:
    def __init__(self, master: int, stdin: int | None, stdout: int | None,
                 on_output: Callable[[bytes], None] | None, pid: int):
        self.master = master
        self.stdin = stdin
        self.stdout = stdout
        self.on_output = on_output
        self.pid = pid
        self._saved: list | None = None
        self._old_winch = None

    def __enter__(self) -> "Terminal":
        if self.stdin is not None and os.isatty(self.stdin):
            self._saved = termios.tcgetattr(self.stdin)
            mode = termios.tcgetattr(self.stdin)
            # cfmakeraw
            mode[0] &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
                         | termios.IGNCR | termios.ICRNL | termios.IXON)
            mode[1] &= ~termios.OPOST
            mode[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
            mode[2] &= ~(termios.CSIZE | termios.PARENB)
            mode[2] |= termios.CS8
            termios.tcsetattr(self.stdin, termios.TCSAFLUSH, mode)
            self._resize()
            import threading

            if threading.current_thread() is threading.main_thread():
                self._old_winch = signal.signal(signal.SIGWINCH, lambda *_: self._resize())
        return self

    def __exit__(self, *exc) -> None:
        if self._saved is not None and self.stdin is not None:
            termios.tcsetattr(self.stdin, termios.TCSAFLUSH, self._saved)
        if self._old_winch is not None:
            signal.signal(signal.SIGWINCH, self._old_winch)
        os.close(self.master)

    def _resize(self) -> None:
        try:
            size = fcntl.ioctl(self.stdin, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
        except OSError:
            pass

    def _emit(self, data: bytes) -> None:
        if self.on_output is not None:
            self.on_output(data)
        elif self.stdout is not None:
            view = memoryview(data)
            while view:
                n = os.write(self.stdout, view)
                view = view[n:]

    def pump(self, fwd: "Forwarder | None" = None) -> int:
        """Relay until the container's PID 1 exits; returns the raw wait status."""
        pidfd = os.pidfd_open(self.pid)
        stdin = self.stdin
        wake = fwd.fds if fwd is not None else []
        try:
            while True:
                fds = [self.master, pidfd] + ([stdin] if stdin is not None else []) + wake
                ready = readable(fds)
                if wake and wake[0] in ready:
                    fwd.drain()
                if self.master in ready:
                    try:
                        data = os.read(self.master, 65536)
                    except OSError as e:
                        if e.errno != errno.EIO:
                            raise
                        data = b""
                    if data:
                        self._emit(data)
                if stdin is not None and stdin in ready:
                    data = os.read(stdin, 65536)
                    if data:
                        try:
                            os.write(self.master, data)
                        except OSError:
                            stdin = None
                    else:
                        stdin = None  # EOF: the container sees it as ^D on an empty line
                        try:
                            os.write(self.master, b"\x04")
                        except OSError:
                            pass
                if pidfd in ready:
                    self._drain()
                    _, status = os.waitpid(self.pid, 0)
                    return status
        finally:
            os.close(pidfd)

    def _drain(self) -> None:
        fl = fcntl.fcntl(self.master, fcntl.F_GETFL)
        fcntl.fcntl(self.master, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self._emit(data)
