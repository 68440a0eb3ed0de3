"""The runtime's exception hierarchy.

Every error carries the exit status `soko run` reports for it, following
Docker: 125 for soko's own failures, 126 when the command cannot be
invoked, 127 when it cannot be found.
"""
from __future__ import annotations


class ContainerError(Exception):
    """Base of everything the runtime raises."""

    status = 125


class InvalidOption(ContainerError):
    """A run option that cannot be honoured (bad size, bad volume syntax, ...)."""


class NameConflict(ContainerError):
    """A container name already in use."""


class UnsafePath(ContainerError):
    """A path that would leave the container root, or loops."""


class UserNotFound(ContainerError):
    """-u / USER names a user or group the image does not know."""


class SnapshotError(ContainerError):
    """A layer could not be unpacked into a snapshot."""


class CgroupError(ContainerError):
    """A cgroup could not be created, limited, joined or removed."""


class SyscallError(ContainerError):
    """A failed system call made through ctypes, with errno and the call named."""

    def __init__(self, errno_: int, what: str):
        import os

        super().__init__(f"{what}: {os.strerror(errno_)}")
        self.errno = errno_
        self.what = what


class StartError(ContainerError):
    """The container's process could not be started (status 125, 126 or 127)."""

    def __init__(self, message: str, status: int = 125):
        super().__init__(message)
        self.status = status


class RuntimeNotAvailable(ContainerError):
    """--runtime names an OCI runtime that is not installed or cannot run here."""


class NoSuchContainer(ContainerError):
    """No container has this name, ID or ID prefix (or the prefix fits several)."""

    status = 1


class ContainerState(ContainerError):
    """The container is not in a state the operation needs (running for exec, stopped for rm)."""

    status = 1


class ExecError(ContainerError):
    """A process could not be started in a running container (126 not executable, 127 not found)."""

    def __init__(self, message: str, status: int = 126):
        super().__init__(message)
        self.status = status
