"""Rendering transfer progress: a bar per blob on a terminal (rich), plain
lines otherwise, nothing with -q."""
from __future__ import annotations

import sys
from typing import Callable

FINAL = ("Pushed", "Layer already exists", "Pull complete", "Already exists", "Download complete")


class PlainProgress:
    """One line per blob outcome (what CI logs want)."""

    def __init__(self, file=None) -> None:
        self.said: set[tuple[str, str]] = set()
        self.file = file  # default: stdout (`run` sends pull progress to stderr, as Docker does)

    def __call__(self, ev) -> None:
        if ev.action in FINAL or ev.action.startswith("Mounted from") or ev.action == "Retrying":
            if (ev.id, ev.action) not in self.said:
                self.said.add((ev.id, ev.action))
                print(f"{ev.id}: {ev.action}", flush=True, file=self.file or sys.stdout)

    def close(self) -> None:
        pass


class BarProgress:
    """A rich progress bar per blob with bytes, rate and outcome."""

    def __init__(self) -> None:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn)

        self.progress = Progress(TextColumn("{task.fields[id]}"), TextColumn("{task.description:<22}"),
                                 BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=False)
        self.tasks: dict[str, int] = {}
        self.progress.start()

    def __call__(self, ev) -> None:
        task = self.tasks.get(ev.id)
        if task is None:
            task = self.tasks[ev.id] = self.progress.add_task(ev.action, id=ev.id, total=ev.total)
        done = ev.action in FINAL or ev.action.startswith("Mounted from")
        self.progress.update(task, description=ev.action, completed=ev.total if done and ev.total else ev.current,
                             total=ev.total)

    def close(self) -> None:
        self.progress.stop()


def make_progress(quiet: bool) -> Callable:
    if quiet:
        return lambda ev: None
    if sys.stdout.isatty():
        return BarProgress()
    return PlainProgress()
