"""One exception hierarchy for the builder; `soko/` turns these into one-line messages."""
from __future__ import annotations


class BuildError(Exception):
    """Base of everything the builder raises on purpose."""


class DockerfileError(BuildError):
    """A Dockerfile that cannot be parsed or is used wrongly; rendered as
    `Dockerfile:LINE: message`, the way people look for it in their editor."""

    def __init__(self, message: str, line: int | None = None, filename: str = "Dockerfile"):
        self.message = message
        self.line = line
        self.filename = filename
        where = f"{filename}:{line}" if line else filename
        super().__init__(f"{where}: {message}")

    def at(self, line: int | None, filename: str | None = None) -> "DockerfileError":
        """The same error placed at a line (for errors found below the parser)."""
        return DockerfileError(self.message, self.line or line, filename or self.filename)


class ExpansionError(BuildError):
    """A `${...}` substitution that is malformed, or `${v?msg}` on an unset variable."""


class ContextError(BuildError):
    """The build context is missing, or a source does not exist or escapes it."""


class StepError(BuildError):
    """A step failed while running (RUN exit status, COPY source missing...)."""

    def __init__(self, message: str, line: int | None = None, filename: str = "Dockerfile",
                 output: list[str] | None = None, exit_code: int | None = None):
        self.line = line
        self.output = output or []
        self.exit_code = exit_code
        where = f"{filename}:{line}: " if line else ""
        super().__init__(f"{where}{message}")


class RunFailed(StepError):
    """A RUN command exited non-zero; `output` holds its last lines."""


class CacheError(BuildError):
    """The build cache is unusable."""


class FetchError(BuildError):
    """ADD of a URL failed, or its content did not match --checksum."""


class CacheExportError(BuildError):
    """--cache-to failed after the image was stored and tagged; `result` is the build's result."""
    result = None


class CacheSpecError(BuildError):
    """A malformed --cache-from/--cache-to: bad usage (the CLI exits 2)."""
