"""Settings: defaults, nbmlops.yaml, NBMLOPS_* variables, and errors that say how to fix them."""

from pathlib import Path

import pytest

from nbmlops.config import find_project_dir, load_settings
from nbmlops.exceptions import ConfigError


def test_defaults_are_an_embedded_store_under_the_project(project: Path):
    s = load_settings()
    assert s.project_dir == project
    assert s.resolved_tracking_uri == f"sqlite:///{project}/.nbmlops/mlflow.db"
    assert s.resolved_artifact_location == (project / ".nbmlops" / "artifacts").as_uri()


def test_precedence_yaml_then_env_and_mlflow_uri_honoured(project: Path):
    (project / "nbmlops.yaml").write_text("experiment: from-yaml\nexit_flush_seconds: 3\n")
    s = load_settings(
        environ={"NBMLOPS_EXIT_FLUSH_SECONDS": "7", "MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}
    )
    assert s.experiment == "from-yaml"
    assert s.exit_flush_seconds == 7
    assert s.resolved_tracking_uri == "http://127.0.0.1:1"
    s2 = load_settings(
        environ={"MLFLOW_TRACKING_URI": "http://a:1", "NBMLOPS_TRACKING_URI": "http://b:2"}
    )
    assert s2.resolved_tracking_uri == "http://b:2"


def test_project_folder_is_found_upwards(project: Path):
    (project / "nbmlops.yaml").write_text("{}\n")
    deep = project / "notebooks" / "sub"
    deep.mkdir(parents=True)
    assert find_project_dir(deep) == project


def test_unknown_key_names_the_file_and_lists_valid_keys(project: Path):
    (project / "nbmlops.yaml").write_text("expriment: typo\n")
    with pytest.raises(ConfigError) as err:
        load_settings()
    msg = str(err.value)
    assert "'expriment'" in msg and "nbmlops.yaml" in msg and "experiment" in msg


def test_bad_value_from_env_names_the_variable():
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"NBMLOPS_EXIT_FLUSH_SECONDS": "soon"})
    assert "NBMLOPS_EXIT_FLUSH_SECONDS" in str(err.value)
    assert "exit_flush_seconds" in str(err.value)


def test_bad_yaml_and_non_mapping(project: Path):
    (project / "nbmlops.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="Cannot parse YAML"):
        load_settings()
    (project / "nbmlops.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings()


def test_ignore_list_from_env():
    s = load_settings(environ={"NBMLOPS_IGNORE": "a, b,,c"})
    assert s.ignore == ["a", "b", "c"]


def test_a_stray_store_above_an_unrelated_folder_is_not_taken(tmp_path: Path):
    (tmp_path / ".nbmlops").mkdir()
    work = tmp_path / "elsewhere"
    work.mkdir()
    assert find_project_dir(work) == work


def test_inside_a_repository_the_store_at_its_root_is_shared(tmp_path: Path):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".nbmlops").mkdir()
    (repo / "notebooks").mkdir()
    assert find_project_dir(repo / "notebooks") == repo
    (tmp_path / "nbmlops.yaml").write_text("{}\n")  # outside the repository: not looked at
    (repo / ".nbmlops").rmdir()
    assert find_project_dir(repo / "notebooks") == repo / "notebooks"
