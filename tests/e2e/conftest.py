"""pytest wiring for the end-to-end tests; the harness is in e2e_harness.py.

Run with:  .venv/bin/python -m pytest tests/e2e -v   (after scripts/setup.sh)
"""

import os
import sys

import pytest
from e2e_harness import E2E, missing_requirements


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def e2e(tmp_path, request):
    why = missing_requirements()
    if why:
        # CI sets APPROUTE_E2E_REQUIRED=1: there a missing Kamailio is a failure, not a skip.
        if os.environ.get("APPROUTE_E2E_REQUIRED") == "1":
            pytest.fail(why)
        pytest.skip(why)
    env = E2E(tmp_path, request)
    yield env
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        sys.stderr.write("\n---- kamailio log tail (%s) ----\n%s\n---- files in %s ----\n"
                         % (env.kamailio_log, env.log_tail(80), tmp_path))
    env.close()
