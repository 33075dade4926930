"""Test-session rules shared by every test module.

``LAVT_REQUIRE_PARITY=1`` (set by ``.ci/run``): a test that would skip because the official parity
fixtures (``../shared/parity``) are missing fails instead, so CI can never pass without checking
parity with the official code."""

from __future__ import annotations

import os

import pytest

PARITY_MARKERS = ("shared/parity", "parity fixture")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or os.environ.get("LAVT_REQUIRE_PARITY") != "1":
        return
    reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
    if any(marker in reason for marker in PARITY_MARKERS):
        report.outcome = "failed"
        report.longrepr = f"LAVT_REQUIRE_PARITY=1 but the parity fixture is missing: {reason}"
