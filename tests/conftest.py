"""The suite's scheduling on xdist workers (``-n auto --dist loadfile`` in ``pyproject.toml``).

A test file's tests run on one worker, so module fixtures (a simulated run, a server) are made
once per file. The files of :data:`HOST` share things of the whole machine (Docker's networks
and address pools, iptables, network namespaces, loop devices, and providers' labels, which
repeat across the tests' own databases): their tests all run on one worker, one at a time. The
longest units of work are handed out first (:data:`LONGEST`).

(This is a scheduler of our own, not xdist's ``loadgroup``: with pytest 9.2, xdist 3.8's
``loadgroup`` no longer groups anything, since it renames node ids through an attribute that
pytest stopped reading.)
"""

from __future__ import annotations

import pytest

HOST = ("tests/live/test_agent.py", "tests/live/test_provider_host.py",
        "tests/live/test_console.py")  # fmt: skip
"""Test files that share the machine: they run one test at a time."""

LONGEST = (
    "tests/live/test_replay.py",
    "tests/sim/test_engines.py",
    "host",
    "tests/live/test_openapi.py",
    "tests/live/test_takeover.py",
    "tests/live/test_leader.py",
    "tests/live/test_crash.py",
    "tests/live/test_audits.py",
    "tests/core/test_stateful.py",
    "tests/sim/test_shipped_scenarios.py",
    "tests/live/test_outages.py",
    "tests/live/test_registration.py",
    "tests/live/test_work.py",
    "tests/live/test_history.py",
)
"""The units of work that take longest (1.5-3.5 minutes for the first three, measured with
``--durations``), handed out first: a long one handed out last would keep one worker busy
while the other has nothing left to do."""


@pytest.hookimpl(tryfirst=True)  # before xdist's own choice of scheduler
def pytest_xdist_make_scheduler(config, log):  # type: ignore[no-untyped-def]
    if config.getvalue("dist") != "loadfile":
        return None  # a mode asked for on the command line: xdist's own
    from xdist.scheduler import LoadFileScheduling

    class HostOnOneWorker(LoadFileScheduling):
        """By file, except that the files of :data:`HOST` are one unit of work."""

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "host" if path in HOST else path

        def _assign_work_unit(self, node):  # type: ignore[no-untyped-def]
            if not getattr(self, "_longest_first", False):  # once, before the first is sent
                self._longest_first = True
                for scope in reversed(LONGEST):
                    if scope in self.workqueue:
                        self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return HostOnOneWorker(config, log)
