"""conftest.py — pytest fixtures for the end-to-end tests.

`fleet` starts one real fleet (tests/e2e/fleet.py) for the whole session, on
free ports with its own temporary PROMO_VAR, and always stops it at the end;
when a test failed, or the fleet would not start, the tail of every log is
printed. Tests are numbered files (test_000_..., test_010_...), selectable
one at a time with `-k`; `quick` is true under PROMO_E2E_QUICK=1 for shorter
runs. Set PROMO_E2E_KEEP=1 to keep the temporary directory with its logs.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fleet import Fleet  # noqa: E402


@pytest.fixture(scope="session")
def fleet(request):
    f = Fleet()
    try:
        f.start()
    except Exception:
        f.failed = True
        f.stop()
        raise
    failed_before = request.session.testsfailed
    yield f
    if request.session.testsfailed > failed_before:
        f.failed = True
    f.stop()


@pytest.fixture(scope="session")
def quick():
    return os.environ.get("PROMO_E2E_QUICK", "") not in ("", "0")
