"""Progress bars for long terminal work (producing demo traffic, replays, benchmarks).

A bar shows only to a person: stderr is a terminal and `CI` is not true. Everywhere else
(CI logs, pipes, tests, Dagster runs) the same code runs with a no-op callback, so callers
never branch:

    from orchestration.cli.progress import progress_bar

    with progress_bar("producing to clicks", total=200_000) as advance:
        produce(..., progress=advance)        # advance(done) sets the count so far

    with progress_bar("replaying hours", total=len(hours), unit="hours") as advance:
        for i, hour in enumerate(hours, 1):
            replay(hour)
            advance(i)

The bar is drawn on stderr and disappears when done (`transient`), so stdout keeps only the
results a script may parse. `say` prints a line above a live bar (or plainly when quiet).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Advance = Callable[[int], None]


def progress_enabled(stream: Any = None) -> bool:
    """True when a person watches: the stream (stderr) is a TTY and CI is not set to true."""
    stream = stream if stream is not None else sys.stderr
    if os.environ.get("CI", "").lower() in ("true", "1"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class _Bar:
    """What `progress_bar` yields: callable with the count so far, plus `say` and
    `set_total` (for work whose size is known only once it starts)."""

    def __init__(self, update: Advance, say: Callable[[str], None], set_total: Advance | None = None):
        self._update = update
        self._set_total = set_total
        self.say = say

    def __call__(self, done: int) -> None:
        self._update(done)

    def set_total(self, total: int) -> None:
        if self._set_total is not None:
            self._set_total(total)


@contextmanager
def progress_bar(description: str, total: int | None, unit: str = "records") -> Iterator[_Bar]:
    """A transient rich bar on stderr counting to `total` (None: unknown, a spinner)."""
    if not progress_enabled():
        yield _Bar(lambda done: None, lambda line: print(line, file=sys.stderr))
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(unit), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield _Bar(
            lambda done: progress.update(task, completed=done),
            progress.console.print,
            lambda n: progress.update(task, total=n),
        )
