"""Helpers of the browser tests: the stack under test and page helpers (the `dagster dev` helpers
they share with the CLI tests are in tests/support/dagster_dev.py)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts" / "ui"
CHROMIUM = os.environ.get("FLOWSUITE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
# Few events: a backfill replays each hour span by span, and shuffled demo event times make
# many spans (one consumer per round), so the replay time grows with the events per hour.
DEMO_EVENTS, DEMO_HOURS = 2000, 4
# A warn expectation the demo data fails on purpose, so a failed check and its observed value
# show next to the passing ones (warn: it reports, it blocks nothing).
FAILING_CHECK = "cost_micros_max_within_demo_budget"
FAILING_EXPECTATION = f"""
    - type: expect_column_max_to_be_between
      kwargs: {{column: cost_micros, max_value: 1000}}
      severity: warn
      name: {FAILING_CHECK}
"""
SERVE_TIMEOUT_S = 180


@dataclass
class UiStack:
    url: str
    home: Path
    env: dict[str, str]
    log: Path
    nux_dismissed: bool = False

    @property
    def env_metastore_url(self) -> str:
        return f"sqlite:///{self.home / 'metastore.db'}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def products_with_failing_check(target: Path) -> Path:
    """The repository's specs, with one extra warn expectation on clicks (FAILING_CHECK)."""
    target.mkdir()
    for spec in (REPO / "dataproducts").glob("*.yaml"):
        text = spec.read_text()
        if spec.stem == "clicks":
            assert "  expectations:\n" in text, "clicks.yaml has no quality.expectations list"
            text = text.replace("  expectations:\n", "  expectations:" + FAILING_EXPECTATION, 1)
        (target / spec.name).write_text(text)
    for folder in ("schemas", "sources"):  # avro/protobuf writer schemas, source connectors
        shutil.copytree(REPO / "dataproducts" / folder, target / folder)
    return target


def shot(page, name: str) -> Path:
    """Save a screenshot under tests/artifacts/ui/<name>.png and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def open_ui(page, url: str, stack: UiStack) -> None:
    """Open a UI page; the first time, dismiss the "Join the Dagster community" dialog.

    The dialog opens a second after the first page loads; "Skip" records that it was seen in
    the instance, so it does not come back for the rest of the module.
    """
    page.goto(url, wait_until="domcontentloaded")
    if stack.nux_dismissed:
        return
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=10_000)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError: this instance saw it already
        stack.nux_dismissed = True
        return
    skip.click()
    skip.wait_for(state="hidden")
    stack.nux_dismissed = True
