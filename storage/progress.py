"""The one progress-event type every component reports through (builder, registry client, runtime).

It lives on the ground floor because `runtime` may not import `registry` or
`builder`, and all three import `storage`. Components never print: they call
a `Progress` callback with these, and `soko/` renders them. The base fields
are the registry client's (a blob's short id, what happened to it, bytes so
far and in all); a component that has more to say extends the dataclass
(builder.BuildEvent adds step numbers and stage names) rather than
inventing a type of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class ProgressEvent:
    """One thing a component reports while it works (see the module's docstring)."""

    id: str = ""                # what it is about: a blob's short digest, a container, a build step
    action: str = ""            # what happened ("Downloading", "Pull complete", "step", "output", "unpack"...)
    current: int = 0            # how far (bytes, or the step's place in its stage)
    total: int | None = None    # out of how many
    digest: str = ""            # the full digest, when it is about a blob
    text: str = ""              # a message or an output line


Progress = Callable[[ProgressEvent], None]


def no_progress(_: ProgressEvent) -> None:
    pass
