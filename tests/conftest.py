"""The suite's scheduling on xdist workers (``--dist loadgroup`` in ``pyproject.toml``).

A test file's tests run on one worker, so module fixtures (a simulated run, a server) are made
once per file. Tests marked ``xdist_group("host")`` share things of the whole machine (Docker's
networks and address pools, iptables, network namespaces, loop devices): they all run on one
worker, one at a time.
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
