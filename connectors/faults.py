"""Fault injection for the crash tests (FLOWSUITE_CRASH_AT): the one engine module every
writer calls at its crash points, so none of them imports another only for this.

A test hook, not a setting: it is the one variable the engine reads from the environment
itself (connectors/settings.py says why), at each crash point, so a test can set it for one
subprocess; unset in production, every crash point is a no-op."""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    """Fault injection for the crash tests: `FLOWSUITE_CRASH_AT=<name>[:<n>]` SIGKILLs this
    process the n-th time (default first) it passes the named point. A no-op otherwise."""
    target = os.environ.get("FLOWSUITE_CRASH_AT")
    if not target:
        return
    point, _, nth = target.partition(":")
    if point != name:
        return
    count = _CRASH_COUNTS.get(name, 0) + 1
    _CRASH_COUNTS[name] = count
    if count >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_CRASH_COUNTS: dict[str, int] = {}
