"""Parameter checks: every bad name or value is refused before any kernel starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbmlops.core.pipeline import params as P
from nbmlops.exceptions import PipelineError
from tests.conftest import write_notebook

PARAMS = """alpha = 0.5  # learning rate
n: int = 3
name = 'x'
flag = True
items = [1, 2]
nothing = None
computed = 2 * 3
"""


@pytest.fixture
def nb(tmp_path: Path) -> Path:
    return write_notebook(tmp_path / "nb.ipynb", ["print(alpha)"], parameters=PARAMS)


def test_reads_names_defaults_and_help(nb: Path) -> None:
    d = P.read_parameters(nb)
    assert d.names == ["alpha", "n", "name", "flag", "items", "nothing", "computed"]
    assert d.parameters["alpha"].default == 0.5
    assert d.parameters["alpha"].help == "learning rate"
    assert d.parameters["n"].type_name == "int"
    assert not d.parameters["computed"].literal


def test_valid_values_pass_and_int_widens_to_float(nb: Path) -> None:
    out = P.validate(
        {"alpha": 1, "n": 4, "name": "y", "computed": [1], "nothing": 3}, P.read_parameters(nb)
    )
    assert out == {"alpha": 1.0, "n": 4, "name": "y", "computed": [1], "nothing": 3}
    assert isinstance(out["alpha"], float)


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"alph": 1}, ["Unknown parameter 'alph'", "alpha, n, name", "Did you mean 'alpha'"]),
        ({"n": "x"}, ["'n' is str", "default 3 is int"]),
        ({"flag": 1}, ["'flag' is int", "bool"]),
        ({"n": 1.5}, ["'n' is float"]),
        ({"x = 1\nimport os\nz": 1}, ["not a Python identifier"]),
        ({"class": 1}, ["not a Python identifier"]),
        ({"items": [object()]}, ["items'[0] is a object", "plain data"]),
        ({"items": {1: 2}}, ["non-string key"]),
        ({"alpha": float("nan")}, ["finite number"]),
    ],
)
def test_bad_parameters_are_refused_with_the_reason(
    nb: Path, given: dict, words: list[str]
) -> None:
    with pytest.raises(PipelineError) as err:
        P.validate(given, P.read_parameters(nb))
    for w in words:
        assert w in str(err.value)


def test_notebook_without_parameters_cell_refuses_parameters(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "plain.ipynb", ["x = 1"])
    assert P.validate({}, P.read_parameters(nb)) == {}
    with pytest.raises(PipelineError, match="no cell tagged 'parameters'"):
        P.validate({"x": 2}, P.read_parameters(nb))


def test_cli_values_follow_the_default_type(nb: Path, tmp_path: Path) -> None:
    d = P.read_parameters(nb)
    f = tmp_path / "p.yaml"
    f.write_text("alpha: 0.1\nitems: [3, 4]\nn: 9\n")
    out = P.parse_cli([("n", "7"), ("name", "123"), ("flag", "false")], [f], d)
    assert out == {"alpha": 0.1, "items": [3, 4], "n": 7, "name": "123", "flag": False}


def test_bad_parameter_files_name_the_file(tmp_path: Path, nb: Path) -> None:
    d = P.read_parameters(nb)
    missing = tmp_path / "missing.yaml"
    with pytest.raises(PipelineError, match="does not exist"):
        P.parse_cli([], [missing], d)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(PipelineError, match="mapping of names"):
        P.parse_cli([], [bad], d)


def test_missing_and_broken_notebooks(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="does not exist"):
        P.read_parameters(tmp_path / "nope.ipynb")
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    with pytest.raises(PipelineError, match="cannot be read"):
        P.read_parameters(broken)
    bad_cell = write_notebook(tmp_path / "syntax.ipynb", [], parameters="a = (")
    with pytest.raises(PipelineError, match=r"parameters cell .* is not valid Python"):
        P.read_parameters(bad_cell)
