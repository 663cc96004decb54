"""Pipeline files: every structural problem is named before any kernel starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbmlops.core.pipeline.spec import load_pipeline
from nbmlops.exceptions import PipelineError
from tests.conftest import write_notebook


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_notebook(tmp_path / "a.ipynb", ["pass"], parameters="out = 'a.txt'\nn = 1")
    write_notebook(tmp_path / "b.ipynb", ["pass"], parameters="src = ''\nout = 'b.txt'")
    (tmp_path / "raw.csv").write_text("x\n1\n")
    return tmp_path


def load(folder: Path, text: str):
    f = folder / "pipeline.yaml"
    f.write_text(text)
    return load_pipeline(f).validate()


def test_edges_from_paths_and_explicit_references(folder: Path) -> None:
    p = load(
        folder,
        """
steps:
  b:
    notebook: b.ipynb
    inputs: {src: a.txt}
    outputs: {out: b.txt}
  a:
    notebook: a.ipynb
    inputs: {raw: raw.csv}
    outputs: {out: a.txt}
  c:
    notebook: b.ipynb
    inputs: {src: {step: b, output: out}}
    outputs: {out: c.txt}
""",
    )
    assert p.order == ["a", "b", "c"]
    assert p.steps["b"].upstream == ["a"]
    assert p.steps["c"].upstream == ["b"]
    assert p.steps["a"].resolved_inputs["raw"].kind == "file"
    injected = p.steps["b"].injected()
    assert injected == {"src": str(folder / "a.txt"), "out": str(folder / "b.txt")}
    assert p.downstream({"a"}) == {"b", "c"}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("steps: [1, 2", ["not valid YAML", "line"]),
        ("- a\n- b\n", ["must be a mapping"]),
        ("stepz: {}\n", ["Unknown key(s) stepz"]),
        ("steps: {}\n", ["needs 'steps:'"]),
        (
            "steps:\n  a: {notebook: a.ipynb, paramters: {}}\n",
            ["Unknown key(s) paramters", "step 'a'"],
        ),
        ("steps:\n  a: {parameters: {}}\n", ["no 'notebook:'"]),
        ("steps:\n  a: {notebook: zz.ipynb}\n", ["zz.ipynb' does not exist", "step 'a'"]),
        (
            "steps:\n  a: {notebook: a.ipynb, parameters: {m: 1}}\n",
            ["Unknown parameter 'm'", "out, n"],
        ),
        ("steps:\n  a: {notebook: a.ipynb, parameters: {n: x}}\n", ["'n' is str"]),
        (
            "steps:\n  a: {notebook: a.ipynb, inputs: {r: gone.csv}}\n",
            ["gone.csv does not exist", "no step produces it"],
        ),
        ("steps:\n  a: {notebook: a.ipynb, needs: [zz]}\n", ["needs: 'zz' is not a step"]),
        (
            "steps:\n  a: {notebook: a.ipynb, kernel: nokernel}\n",
            ["No Jupyter kernel named 'nokernel'", "python3"],
        ),
        (
            "steps:\n  a: {notebook: a.ipynb, outputs: {out: x.txt}}\n"
            "  b: {notebook: b.ipynb, outputs: {out: x.txt}}\n",
            ["also output 'out' of step 'a'"],
        ),
        (
            "steps:\n  a: {notebook: a.ipynb, inputs: {i: {step: b, output: nope}}}\n"
            "  b: {notebook: b.ipynb, outputs: {out: b.txt}}\n",
            ["step 'b' has no output 'nope'", "its outputs: out"],
        ),
        (
            "steps:\n  a: {notebook: a.ipynb, inputs: {i: c.txt}, outputs: {out: a.txt}}\n"
            "  b: {notebook: b.ipynb, inputs: {src: a.txt}, outputs: {out: b.txt}}\n"
            "  c: {notebook: b.ipynb, inputs: {src: b.txt}, outputs: {out: c.txt}}\n",
            ["cycle", "a -> b -> c -> a"],
        ),
        ("steps:\n  'bad name': {notebook: a.ipynb}\n", ["Step name 'bad name' is not valid"]),
        ("name: ../../etc\nsteps:\n  a: {notebook: a.ipynb}\n", ["Pipeline name '../../etc'"]),
    ],
)
def test_bad_pipelines_are_named_before_any_work(folder: Path, text: str, words: list[str]) -> None:
    with pytest.raises(PipelineError) as err:
        load(folder, text)
    message = str(err.value)
    for w in words:
        assert w in message, message
    assert not (folder / ".nbmlops").exists()  # nothing ran, nothing recorded


def test_missing_pipeline_file(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="does not exist"):
        load_pipeline(tmp_path / "pipeline.yaml")


def test_unknown_data_version_is_named(folder: Path) -> None:
    from nbmlops.core.data.store import DataStore

    store = DataStore(folder / "data")
    (folder / "pipeline.yaml").write_text(
        "steps:\n  a: {notebook: a.ipynb, inputs: {raw: iris@2}}\n"
    )
    with pytest.raises(PipelineError, match="data version 'iris@2' is not in the data store"):
        load_pipeline(folder / "pipeline.yaml").validate(store)
