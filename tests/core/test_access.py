"""Dataset access rules from nbmlops.yaml: first matching key wins, "*" is everyone."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbmlops.config import AccessRules, DatasetAccess, load_settings
from nbmlops.core.access import check_dataset, dataset_rule
from nbmlops.exceptions import AccessDenied, NbmlopsError


def test_an_unmatched_dataset_is_open_to_everyone():
    r = AccessRules(datasets={"sales": {"commit": ["alice"]}})
    assert dataset_rule(r, "churn") is None
    check_dataset(r, "anyone", "commit", "churn")
    check_dataset(AccessRules(), "anyone", "read", "churn")


def test_exact_and_glob_keys_match():
    r = AccessRules(datasets={"sales": {"commit": ["alice"]}, "raw-*": {"read": ["bob"]}})
    assert dataset_rule(r, "sales") == DatasetAccess(commit=["alice"])
    assert dataset_rule(r, "raw-2024") == DatasetAccess(read=["bob"])
    assert dataset_rule(r, "sales-eu") is None
    assert dataset_rule(r, "RAW-2024") is None  # matching is case-sensitive everywhere


def test_the_first_matching_key_in_file_order_wins(tmp_path: Path):
    (tmp_path / "nbmlops.yaml").write_text(
        "access:\n"
        "  datasets:\n"
        "    sales-eu:\n"
        "      commit: [carol]\n"
        "    sales*:\n"
        "      commit: [alice]\n"
        "    '*':\n"
        "      commit: []\n"
    )
    r = load_settings(tmp_path, environ={}).access
    assert dataset_rule(r, "sales-eu") == DatasetAccess(commit=["carol"])
    assert dataset_rule(r, "sales-us") == DatasetAccess(commit=["alice"])
    assert dataset_rule(r, "churn") == DatasetAccess(commit=[])
    check_dataset(r, "carol", "commit", "sales-eu")
    with pytest.raises(AccessDenied):
        check_dataset(r, "alice", "commit", "sales-eu")  # the later, broader key does not apply
    check_dataset(r, "alice", "commit", "sales-us")
    check_dataset(r, "alice", "read", "churn")  # read defaults to everyone


def test_star_means_everyone_and_an_empty_list_no_one():
    r = AccessRules(datasets={"open": {"read": ["*"], "commit": ["*"]}, "frozen": {"commit": []}})
    check_dataset(r, "zed", "read", "open")
    check_dataset(r, "zed", "commit", "open")
    check_dataset(r, "zed", "read", "frozen")
    with pytest.raises(AccessDenied, match=r"\(allowed: no one\)"):
        check_dataset(r, "alice", "commit", "frozen")
    mixed = AccessRules(datasets={"x": {"read": ["alice", "*"]}})
    check_dataset(mixed, "bob", "read", "x")


def test_read_and_commit_are_checked_separately():
    r = AccessRules(datasets={"sales": {"read": ["bob", "alice"], "commit": ["alice"]}})
    check_dataset(r, "bob", "read", "sales")
    with pytest.raises(AccessDenied):
        check_dataset(r, "bob", "commit", "sales")
    with pytest.raises(AccessDenied):
        check_dataset(r, "eve", "read", "sales")


def test_the_denial_names_user_dataset_allowed_users_rule_and_fix():
    r = AccessRules(datasets={"sales*": {"commit": ["alice", "carol"]}})
    with pytest.raises(AccessDenied) as info:
        check_dataset(r, "bob", "commit", "sales")
    err = info.value
    assert isinstance(err, NbmlopsError) and isinstance(err, PermissionError)
    assert err.what == "User 'bob' may not commit dataset 'sales' (allowed: alice, carol)"
    assert err.where == "nbmlops.yaml access.datasets['sales*']"
    assert err.fix == (
        "Ask an owner to add you to access.datasets['sales*'].commit in nbmlops.yaml, "
        "or run as an allowed user (NBMLOPS_USER)."
    )
    text = str(err)
    for part in ("'bob'", "'sales'", "alice, carol", "access.datasets['sales*']", "NBMLOPS_USER"):
        assert part in text


def test_an_unknown_action_is_a_usage_error():
    with pytest.raises(NbmlopsError, match="Unknown dataset action"):
        check_dataset(AccessRules(), "u", "delete", "x")  # type: ignore[arg-type]
