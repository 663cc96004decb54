"""An in-process IPython shell with nbmlops loaded, in a fresh project."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell


@pytest.fixture
def shell(project: Path) -> Iterator[InteractiveShell]:
    sh = InteractiveShell.instance()
    sh.reset(new_session=True)
    sh.run_line_magic("load_ext", "nbmlops")
    yield sh
    sh.run_line_magic("unload_ext", "nbmlops")
    sh.reset(new_session=True)
