"""pytest-jupyter's fixtures (jp_fetch, jp_serverapp, ...) and its async-test hooks, for the
server extension's tests only: its autouse event-loop fixture stays out of the rest of the
suite."""

from pytest_jupyter.jupyter_server import *  # noqa: F403
