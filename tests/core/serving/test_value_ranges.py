"""Values that do not fit their column's type, over real HTTP: 422 naming the field, the model
never called, and nothing counted as a model error (RELIABILITY case 31).

The numbers are sent as raw JSON text: a 400-digit integer, ``1e400`` (which JSON parsers read
as infinity) and an exponent of a billion are what a client's serializer may well write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nbmlops.core.registry.safety import files_digest
from tests.core.serving.conftest import COLUMNS, unique

HUGE = "9" * 400  # an integer no double can hold
HUGER = "7" * 5000  # more digits than Python converts by default
# One column of every scalar type a served scikit-learn model takes; the rest stay double.
TYPES = {"f0": "double", "f1": "float", "f2": "long", "f3": "integer", "f4": "boolean"}
GOOD = {"f0": 0.5, "f1": 0.5, "f2": 1, "f3": 1, "f4": True, **{c: 0.5 for c in COLUMNS[5:]}}


@pytest.fixture(scope="module")
def typed(store, tmp_path_factory) -> str:
    """Model "a" registered with a signature whose first columns have other types."""
    folder = store.copy_of("a", tmp_path_factory.mktemp("typed") / "model")
    spec = yaml.safe_load((folder / "MLmodel").read_text())
    inputs = json.loads(spec["signature"]["inputs"])
    for column in inputs:
        column["type"] = TYPES.get(column["name"], column["type"])
    spec["signature"]["inputs"] = json.dumps(inputs)
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))
    name = unique("typed")
    version = store.register_folder(name, Path(folder), files_digest(folder))
    store.client.set_registered_model_alias(name, "champion", str(version))
    return name


@pytest.fixture
def spy():
    def install(running):
        model = running.model()
        calls = []
        inner = model.predict

        def counting(rows):
            calls.append(rows.n_rows)
            return inner(rows)

        model.predict = counting
        return calls

    return install


def _row_text(column: str, literal: str) -> str:
    """One record as JSON text, with ``literal`` written as it is for ``column``."""
    cells = [f'"{c}": {literal if c == column else json.dumps(v)}' for c, v in GOOD.items()]
    return "{" + ", ".join(cells) + "}"


def _bodies(column: str, literal: str) -> dict[str, bytes]:
    """The same bad row in every body format the gateway accepts."""
    row = _row_text(column, literal)
    values = ", ".join(literal if c == column else json.dumps(v) for c, v in GOOD.items())
    return {
        "list": f"[{row}]".encode(),
        "records": f'{{"records": [{row}]}}'.encode(),
        "dataframe_records": f'{{"dataframe_records": [{row}]}}'.encode(),
        "instances": f'{{"instances": [{row}]}}'.encode(),
        "dataframe_split": (
            f'{{"dataframe_split": {{"columns": {json.dumps(list(GOOD))}, "data": [[{values}]]}}}}'
        ).encode(),
    }


OUT_OF_RANGE = [
    ("f0", HUGE),  # double
    ("f0", "-" + HUGE),
    ("f0", HUGER),
    ("f0", "1e400"),  # parsed as infinity
    ("f0", "-1e400"),
    ("f0", "1e1000000000"),
    ("f1", "1e39"),  # float32
    ("f1", HUGE),
    ("f1", "1e400"),
    ("f2", HUGE),  # long
    ("f2", "9223372036854775808"),
    ("f2", "1e400"),
    ("f2", "1e300"),
    ("f2", HUGER),
    ("f3", "2147483648"),  # integer
    ("f3", HUGE),
    ("f3", "-1e400"),
    ("f4", HUGE),  # boolean
    ("f4", HUGER),
    ("f4", "1e400"),
]


@pytest.mark.slow
def test_values_that_do_not_fit_their_column_are_refused_naming_the_field(serve, typed, spy):
    running = serve(f"{typed}@champion")
    calls = spy(running)
    client = running.http()
    for column, literal in OUT_OF_RANGE:
        for fmt, body in _bodies(column, literal).items():
            reply = client.post(body)
            label = (column, literal[:20], fmt)
            assert reply.status == 422, (label, reply.status, reply.body[:300])
            answer = reply.json()
            assert answer["fields"] == [column], (label, answer)
            assert repr(column) in answer["error"], (label, answer["error"])
    assert calls == []
    assert client.post([GOOD]).status == 200  # the same connection still serves
    assert calls == [1]
    metrics = running.get("/metrics").body.decode()
    assert 'reason="invalid_input"' in metrics
    assert 'reason="model_error"' not in metrics and 'status="500"' not in metrics


@pytest.mark.slow
def test_a_model_without_a_signature_gets_no_number_it_cannot_hold(serve, store, spy, tmp_path):
    folder = store.copy_of("a", tmp_path / "model")
    spec = yaml.safe_load((folder / "MLmodel").read_text())
    spec.pop("signature", None)
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))
    name = unique("unsigned")
    version = store.register_folder(name, folder, files_digest(folder))
    store.client.set_registered_model_alias(name, "champion", str(version))
    running = serve(f"{name}@champion")
    assert running.model().schema is None
    calls = spy(running)
    client = running.http()
    for literal in (HUGE, HUGER):
        reply = client.post(f"[{_row_text('f6', literal)}]".encode())
        assert reply.status == 422, reply.body[:300]
        assert reply.json()["fields"] == ["f6"]
    assert calls == []
    metrics = running.get("/metrics").body.decode()
    assert 'reason="model_error"' not in metrics and 'status="500"' not in metrics
