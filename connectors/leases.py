"""Claim leases: the one renewer every claim holder uses (landing, compaction, replay), and the clock.

A claim in the metastore names its owner and a lease (`lease_until`); the owner renews it every
third of the lease in a background thread. When a renewal is refused (the lease ran out and
another run took the claim over), the claim is *lost*, and `check()` raises `ClaimLostError`
before the holder commits anything. The metastore decides expiry with its `clock` (seconds,
like `time.time`); tests give a clock that runs ahead instead of sleeping out a lease.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from connectors.errors import TransientError

log = logging.getLogger(__name__)

Clock = Callable[[], float]
SYSTEM_CLOCK: Clock = time.time


class ClaimLostError(TransientError, RuntimeError):
    """Our claim was taken over (its lease expired); the work must not be committed."""


class Renewer(Protocol):
    def renew(self, product: str, resource: str, owner: str, lease_s: float) -> bool: ...


class LeaseKeeper:
    """Renews `owner`'s claims on `resources` of `product` every `lease_s / 3` in the background.

    Use as a context manager (or `start()` / `stop()`); `add()` a resource claimed later.
    `check(resource)` (or `check()` for all) raises `ClaimLostError` once a renewal was refused;
    `what` ends that message ("nothing committed", "nothing swapped").
    """

    def __init__(self, metastore: Renewer, product: str, owner: str, lease_s: float,
                 resources: Iterable[str] = (), *, what: str = "nothing committed"):
        self.metastore, self.product, self.owner, self.lease_s, self.what = metastore, product, owner, lease_s, what
        self.resources: set[str] = set(resources)
        self.lost: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{product}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def add(self, resource: str) -> None:
        self.resources.add(resource)

    def discard(self, resource: str) -> None:
        self.resources.discard(resource)

    def renew_all(self) -> None:
        """One renewal pass (the background thread runs it every third of the lease)."""
        for resource in list(self.resources - self.lost):
            try:
                if not self.metastore.renew(self.product, resource, self.owner, self.lease_s):
                    self.lost.add(resource)
            except Exception:  # a metastore blip; the next renewal retries
                log.warning("renewing claim %s failed; retrying", resource, exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            self.renew_all()

    def check(self, resource: str | None = None) -> None:
        lost = sorted(self.lost if resource is None else self.lost & {resource})
        if lost:
            raise ClaimLostError(f"{self.product}: claim {', '.join(lost)} was lost (lease not renewed); {self.what}")
