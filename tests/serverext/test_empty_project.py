"""A server started in a folder where nothing was tracked yet: the extension is loaded, every
read answers empty, and reading creates no store there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"nbmlops.server": True}}}


async def test_reading_an_untracked_folder_answers_empty_and_writes_nothing(
    jp_fetch, jp_serverapp, jp_root_dir: Path
):
    ext = jp_serverapp.extension_manager.extensions["nbmlops.server"]
    assert ext.enabled and ext.validate()
    answers = {}
    for path, params in [
        (("runs",), {"notebook": "train.ipynb"}),
        (("experiments",), {}),
        (("models",), {}),
        (("journal",), {}),
    ]:
        response = await jp_fetch("nbmlops", "api", *path, params=params)
        answers[path[0]] = json.loads(response.body)
    assert answers["runs"] == {"runs": [], "total": 0, "truncated": False}
    assert answers["experiments"] == {"experiments": []}
    assert answers["models"] == {"models": []}
    assert answers["journal"]["pending"] == 0
    assert str(jp_root_dir) in answers["journal"]["store"]
    assert not (jp_root_dir / ".nbmlops" / "mlflow.db").exists()
