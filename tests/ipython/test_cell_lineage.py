"""A first day with nbmlops, in a real kernel: a committed data version, a plain
``train_test_split`` cell, a ``%%track`` training cell, ``%register`` and ``%promote``.
The untracked split cell joins the data version and the model in one lineage graph; the
names a user types reach it; the model card names the training data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import networkx as nx
import pytest

from nbmlops.api.lineage import lineage_graph, lineage_store, resolve
from nbmlops.config import load_settings
from nbmlops.exceptions import ModelNotFound
from tests.conftest import outputs_text, run_papermill, write_notebook

pytestmark = [pytest.mark.kernel]

CELLS = [
    "%load_ext nbmlops\nimport nbmlops\nfrom sklearn.datasets import load_wine\n"
    "from sklearn.ensemble import RandomForestClassifier\n"
    "from sklearn.model_selection import train_test_split",
    "wine = load_wine(as_frame=True).frame",
    "%data commit wine -m 'the wine data'",
    "df = nbmlops.data.load('wine@1')",
    "X_train, X_test, y_train, y_test = train_test_split(\n"
    "    df.drop(columns='target'), df['target'], test_size=0.3, random_state=0\n)",
    "%%track train\nclf = RandomForestClassifier(n_estimators=25, max_depth=4, random_state=0)\n"
    "clf.fit(X_train, y_train)\nacc = clf.score(X_test, y_test)",
    "%register clf wine-clf --intended-use 'a demo' --limitations 'wine only'",
    "%promote wine-clf 1",
    "%lineage wine-clf@champion",
]


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The notebook, run once in a real kernel; the project folder it ran in."""
    folder = tmp_path_factory.mktemp("wine") / "project"
    folder.mkdir()
    # the requirements audit needs the network: off, as in the other registry tests
    (folder / "nbmlops.yaml").write_text("registry:\n  scan:\n    pip_audit: 'off'\n")
    nb = write_notebook(folder / "wine.ipynb", CELLS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBMLOPS_")}
    old = Path.cwd()
    os.chdir(folder)
    try:
        run_papermill(nb, folder, env=env, timeout=600)
        yield folder
    finally:
        os.chdir(old)


def cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nbmlops.cli.main", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_plain_split_cell_joins_the_data_version_and_the_model(wine: Path):
    graph = lineage_graph(load_settings(wine))
    g = graph.graph
    data = next(n for n, a in g.nodes(data=True) if "wine@1" in (a.get("versions") or []))
    model = next(n for n, a in g.nodes(data=True) if a.get("kind") == "model")
    path = nx.shortest_path(g, data, model)  # wine@1 -> split cell -> X_train -> clf
    assert [g.nodes[n]["kind"] for n in path] == ["data", "cell", "data", "model"], path
    run = next(n for n, a in g.nodes(data=True) if a.get("kind") == "run")
    assert nx.has_path(g, data, run)
    split = path[1]
    assert str(g.nodes[split]["first_line"]).startswith("X_train, X_test")
    assert g.nodes[split]["execution_count"] == 5  # the prompt the user saw
    # the split cell bound X_train, which the tracked cell read
    outputs = {d["label"] for _, _, d in g.out_edges(split, data=True)}
    assert {"X_train", "X_test", "y_train", "y_test"} <= outputs

    # the execution history keeps each cell as it was run
    cells = lineage_store(load_settings(wine)).cells()
    split_row = next(c for c in cells if c["execution_count"] == 5)
    assert split_row["source"] == CELLS[4]
    assert split_row["reads"][:2] == ["train_test_split", "df"]
    assert {o["name"] for o in split_row["outputs"]} == {"X_train", "X_test", "y_train", "y_test"}
    assert all(o["digest"] for o in split_row["outputs"])
    load_row = next(c for c in cells if c["execution_count"] == 4)
    assert [x["ref"] for x in load_row["loads"]] == ["wine@1"]
    assert [c["execution_count"] for c in cells] == list(range(1, len(CELLS) + 1))

    shown = outputs_text(wine / "wine.out.ipynb")
    assert "lineage of registered wine-clf v1 (champion)" in shown
    assert "wine@1" in shown and "cell [5]: X_train, X_test, y_train, y_test" in shown


def test_the_cli_takes_the_names_users_type(wine: Path):
    proc = cli(wine, "lineage", "wine-clf@champion")
    assert proc.returncode == 0, proc.stderr
    assert "lineage of registered wine-clf v1 (champion)" in proc.stdout
    assert "wine@1" in proc.stdout and "model clf" in proc.stdout

    proc = cli(wine, "lineage", "wine-clff")
    assert proc.returncode != 0
    assert "did you mean 'wine-clf'" in proc.stderr, proc.stderr
    assert "variable" not in proc.stderr


def test_registered_names_and_run_id_prefixes_resolve(wine: Path):
    settings = load_settings(wine)
    graph = lineage_graph(settings)
    run = next(a for _, a in graph.graph.nodes(data=True) if a.get("kind") == "run")
    model = next(n for n, a in graph.graph.nodes(data=True) if a.get("kind") == "model")
    for name in (
        "wine-clf",
        "models:/wine-clf/1",
        "wine-clf@champion",
        "models:/wine-clf@champion",
    ):
        node = resolve(graph, name, settings=settings)
        assert model in graph.view(node).upstream(), name
    assert resolve(graph, run["run_id"][:8], settings=settings) == f"run:{run['run_key']}"
    assert resolve(graph, "train", settings=settings) == f"run:{run['run_key']}"  # a run's name
    x_train = resolve(graph, "X_train", settings=settings)  # a name a cell bound
    assert graph.graph.nodes[x_train]["label"] == "X_train" and x_train.startswith("data:")
    with pytest.raises(ModelNotFound, match=r"no alias 'staging'.*champion"):
        resolve(graph, "wine-clf@staging", settings=settings)


def test_the_card_names_the_training_data_and_ranks_features_on_it(wine: Path):
    from nbmlops.api.registry import model_registry

    card = model_registry(load_settings(wine)).card("wine-clf", 1)
    named = [(t["name"], t["role"]) for t in card.training_data]
    assert named == [("X_train", "features"), ("y_train", "target")]
    assert all(t["sources"] == ["wine@1"] for t in card.training_data)
    assert card.data_versions == ["wine@1"]
    assert len(card.data_digests) == 2  # not the test sets
    assert card.importance_basis.startswith("training data X_train and y_train (124 rows")
    assert sum(float(r["mean"]) > 0 for r in card.importance) >= 3
    shown = outputs_text(wine / "wine.out.ipynb")
    assert "data X_train (features, 124x13, from wine@1), y_train (target, 124, from" in shown
