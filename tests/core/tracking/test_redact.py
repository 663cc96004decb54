"""The redaction patterns: secret names and well-known secret formats, and what they leave alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbmlops.config import load_settings
from nbmlops.core.tracking.redact import MARKER, Redactor, redactor_for
from nbmlops.exceptions import ConfigError

R = Redactor()

# Realistic-looking fakes of each format (none is a live credential).
AWS_KEY_ID = "AKIA" + "Q3EGRT5XJ2LWZ7PA"
GITHUB = "ghp_" + "x7Rk2mQ9vL4nP8sT1wY6zA3bC5dE0fG2hJ4k"
GITHUB_PAT = "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"
SLACK = "xoxb-" + "2048-1234567890-AbCdEfGhIjKlMnOp"
STRIPE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
OPENAI = "sk-proj-" + "Zq8Yx7Wv6Ut5Sr4Qp3On2Ml1Kk0Jj9Ii"
GOOGLE = "AIza" + "SyD-9tSrke72PouQMnMX7a7eZSW0jkFMBWY"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx1y2z3\nAbCdEf==\n-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "PASSWORD",
        "db_password",
        "dbPassword",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "token",
        "GITHUB_TOKEN",
        "access_token",
        "api_key",
        "apikey",
        "APIKey",
        "openaiApiKey",
        "access_key",
        "aws_secret_access_key",
        "awsSecretAccessKey",
        "private_key",
        "credentials",
        "creds",
        "auth",
        "Authorization",
        "session_cookie",
        "sessionId",
    ],
)
def test_secret_names(name: str):
    assert R.is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "C",
        "lr",
        "DB_URL",
        "key",
        "key_id",
        "max_tokens",
        "n_tokens",
        "pad_token",
        "eos_token_id",
        "tokenizer",
        "password_min_length",
        "secret_name",
        "token_url",
        "author",
        "passes",
        "compass",
        "keyboard",
    ],
)
def test_names_that_are_not_secrets(name: str):
    assert not R.is_secret_name(name)


@pytest.mark.parametrize(
    "secret", [AWS_KEY_ID, GITHUB, GITHUB_PAT, SLACK, STRIPE, OPENAI, GOOGLE, JWT]
)
def test_well_known_formats_are_replaced_inside_text_and_only_they(secret: str):
    text = f"call the service with {secret} then retry later"
    assert R.text(text) == f"call the service with {MARKER} then retry later"
    assert R.param("innocent", secret) == MARKER


def test_pem_private_key_blocks():
    out = R.text(f"key:\n{PEM}\nend of file")
    assert "MIIEow" not in out and "AbCdEf" not in out and out.endswith("end of file")


def test_url_keeps_everything_but_the_password():
    assert (
        R.param("DB_URL", "postgresql://scott:tiger@db.example/prod")
        == f"postgresql://scott:{MARKER}@db.example/prod"
    )
    assert R.text("https://user:hunter2@host/x?q=1") == f"https://user:{MARKER}@host/x?q=1"
    # no userinfo password: nothing to hide
    assert R.text("https://user@host/x and mailto:a@b.c") == "https://user@host/x and mailto:a@b.c"


def test_bearer_and_secret_pairs_in_free_text():
    assert R.text("Authorization: Bearer abc.def-ghi_jkl") == f"Authorization: Bearer {MARKER}"
    assert R.text("host=db password=tiger user=x") == f"host=db password={MARKER} user=x"
    assert R.text("{'user': 'scott', 'password': 'tiger'}") == (
        f"{{'user': 'scott', 'password': '{MARKER}'}}"
    )
    assert R.text("see https://h/path?token=abc123&x=1") == f"see https://h/path?token={MARKER}&x=1"


def test_long_innocent_text_is_left_exactly_as_it_is():
    text = (
        "Tokens and passwords are discussed in chapter 3; max_tokens=512, key=value, "
        "sk-short, https://example.com/a:b@c is not a URL with userinfo. " * 20
    )
    assert R.text(text) == text
    assert R.param("description", text) == text


def test_param_under_a_secret_name_is_replaced_whole_but_not_none_or_bools():
    assert R.param("password", "hunter2") == MARKER
    assert R.param("password", "None") == "None"
    assert R.param("auth", "False") == "False"
    assert R.param("lr", "0.1") == "0.1"


def test_code_keeps_its_shape():
    code = (
        "import os\n"
        'password = "hunter2"\n'
        "api_key = 'sk-live-" + "4eC39HqLyjWDarjtT1zdp7dcXY'\n"
        "pin_password = 1234\n"
        "token: str = 'tok-123456'\n"
        'creds = {"user": "scott", "password": "tiger"}\n'
        'os.environ["API_KEY"] = "abc123xyz"\n'
        "conn = connect(password='pw1', timeout=5)\n"
        'dsn = "host=db password=tiger"\n'
        'if password == "guess":\n'
        "    pass\n"
        "max_tokens = 512\n"
        "password = getpass()\n"
        'nbmlops.log_param("db_password", "s3cr3t")\n'
        'cols = ["token", "text"]\n'
    )
    assert R.code(code) == (
        "import os\n"
        f'password = "{MARKER}"\n'
        f"api_key = '{MARKER}'\n"
        f'pin_password = "{MARKER}"\n'
        f"token: str = '{MARKER}'\n"
        f'creds = {{"user": "scott", "password": "{MARKER}"}}\n'
        f'os.environ["API_KEY"] = "{MARKER}"\n'
        f"conn = connect(password='{MARKER}', timeout=5)\n"
        f'dsn = "host=db password={MARKER}"\n'
        'if password == "guess":\n'
        "    pass\n"
        "max_tokens = 512\n"
        "password = getpass()\n"
        f'nbmlops.log_param("db_password", "{MARKER}")\n'
        'cols = ["token", "text"]\n'
    )


def test_redaction_is_idempotent():
    once = R.code('password = "hunter2"\nurl = "https://u:p4ss@h/x"')
    assert R.code(once) == once
    assert R.text(R.text("password=tiger")) == R.text("password=tiger")


def test_record_redacts_params_tags_and_the_note():
    rec = {
        "t": "end",
        "params": {"password": "hunter2", "C": "0.5"},
        "tags": {"mlflow.note.content": '```python\nsecret = "x1y2z3"\n```', "n": "ok"},
        "metrics": [{"name": "password_len", "value": 7.0}],
    }
    out = R.record(rec)
    assert out["params"] == {"password": MARKER, "C": "0.5"}
    assert out["tags"]["mlflow.note.content"] == f'```python\nsecret = "{MARKER}"\n```'
    assert out["metrics"] == rec["metrics"]
    assert rec["params"]["password"] == "hunter2"  # the caller's record is not changed


def test_capture_note_names_the_params_never_the_values():
    params = {"password": "hunter2", "conn": "https://u:hunter2@h/x", "C": "0.5"}
    note = R.capture_note(params, source=f'password = "{MARKER}"')
    assert note is not None and "password, conn" in note and "hunter2" not in note
    assert "1 value(s) in the recorded code" in note
    assert params["C"] == "0.5"
    assert R.capture_note({"C": "0.5"}) is None


def test_extra_patterns_from_settings(project: Path):
    (project / "nbmlops.yaml").write_text(
        "redact_names: ['^pin_code$']\nredact_values: ['ticket (?P<secret>ACME-\\d{6})']\n"
    )
    r = redactor_for(load_settings())
    assert r.param("pin_code", "4711") == MARKER
    assert r.param("note", "see ticket ACME-123456 today") == f"see ticket {MARKER} today"
    assert not R.is_secret_name("pin_code")  # built-ins alone do not know it


def test_extra_patterns_from_the_environment_as_one_regex_or_a_json_list(project: Path):
    s = load_settings(environ={"NBMLOPS_REDACT_NAMES": "^x{1,2}_pin$"})
    assert s.redact_names == ["^x{1,2}_pin$"]
    s = load_settings(environ={"NBMLOPS_REDACT_VALUES": '["ACME-\\\\d+", "ZZ-\\\\d+"]'})
    assert redactor_for(s).text("ACME-1 ZZ-2 ok") == f"{MARKER} {MARKER} ok"


def test_a_bad_regex_is_a_clear_error_naming_the_setting(project: Path):
    (project / "nbmlops.yaml").write_text("redact_names: ['(unclosed']\n")
    with pytest.raises(ConfigError) as err:
        load_settings()
    msg = str(err.value)
    assert "redact_names" in msg and "(unclosed" in msg and "regular expression" in msg
    with pytest.raises(ConfigError, match="NBMLOPS_REDACT_VALUES"):
        load_settings(environ={"NBMLOPS_REDACT_VALUES": "[not json"})


def test_git_remote_url_is_recorded_without_its_token(project: Path):
    import subprocess

    from nbmlops.core.tracking.context import git_state

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x")
    git("remote", "add", "origin", f"https://ci:{GITHUB}@github.com/acme/repo.git")
    tags = git_state(project)
    assert tags["mlflow.source.git.repoURL"] == f"https://ci:{MARKER}@github.com/acme/repo.git"


def test_openlineage_events_redact_code_and_errors_from_older_journals(project: Path):
    import json
    import uuid

    from nbmlops.core.lineage.openlineage import LineageEmitter

    emitter = LineageEmitter(load_settings())
    assert emitter.emit(
        "FAIL",
        run_key=uuid.uuid4().hex,
        job_name="old.run",
        ts_ms=1_700_000_000_000,
        source_code='password = "hunter2"\nconnect()',
        error="OperationalError: postgresql://scott:tiger@db/prod refused",
    )
    [line] = (project / ".nbmlops" / "openlineage" / "events.jsonl").read_text().splitlines()
    event = json.loads(line)
    assert "hunter2" not in line and "tiger" not in line
    assert event["job"]["facets"]["sourceCode"]["sourceCode"] == f'password = "{MARKER}"\nconnect()'
    assert event["run"]["facets"]["errorMessage"]["message"] == (
        f"OperationalError: postgresql://scott:{MARKER}@db/prod refused"
    )


def test_a_tracking_uri_holding_a_password_is_not_written_into_lineage(project: Path):
    import uuid

    from nbmlops.core.lineage.openlineage import LineageEmitter
    from nbmlops.core.lineage.store import LineageStore

    uri = "postgresql://mlflow:Db-Pa55word@db.example/mlflow"
    key = uuid.uuid4().hex
    store = LineageStore(project / "lineage.db")
    store.record_run(
        key,
        run_id="r1",
        name="n",
        experiment="e",
        status="FINISHED",
        start_ms=1,
        end_ms=2,
        source=None,
        datasets=[],
        models=[{"name": "model"}],
        tracking_uri=uri,
    )
    emitter = LineageEmitter(load_settings(tracking_uri=uri))
    assert emitter.emit(
        "COMPLETE", run_key=key, job_name="e.n", ts_ms=2, models=[{"name": "model"}]
    )
    events = (project / ".nbmlops" / "openlineage" / "events.jsonl").read_text()
    assert f"postgresql://mlflow:{MARKER}@db.example/mlflow" in events
    written = b"".join(p.read_bytes() for p in project.rglob("*") if p.is_file())
    assert b"Db-Pa55word" not in written


def test_values_of_secret_params_are_replaced_wherever_they_appear_later():
    params = {"password": "hunter2", "pin": "12", "auth": "None", "user": "scott"}
    r = R.knowing(params)
    assert r.text("login scott/hunter2 failed") == f"login scott/{MARKER} failed"
    assert r.text("pin 12, auth None") == "pin 12, auth None"  # too short or not a secret
    assert R.knowing({"C": "0.5"}) is R


def test_values_that_only_switch_a_secret_are_kept():
    assert R.text("auth=none password: null") == "auth=none password: null"
    assert R.code("use_token = True\npassword = None\n") == "use_token = True\npassword = None\n"
    assert R.param("auth", "off") == "off"
