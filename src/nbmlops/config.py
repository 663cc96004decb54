"""Settings from ``nbmlops.yaml`` and ``NBMLOPS_*`` variables, validated with clear errors.

Precedence, lowest first: built-in defaults, ``nbmlops.yaml`` in the project folder,
environment variables. ``MLFLOW_TRACKING_URI`` is honoured (``NBMLOPS_TRACKING_URI`` wins over it).
The project folder is found from the working folder upwards (see ``find_project_dir``);
it is the working folder when nothing marks another one.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nbmlops.exceptions import ConfigError

CONFIG_FILE = "nbmlops.yaml"
HOME_DIR = ".nbmlops"
ENV_PREFIX = "NBMLOPS_"


class DatasetAccess(BaseModel):
    """Who may read and who may commit a dataset (user names; "*" means everyone)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    read: list[str] = Field(default_factory=lambda: ["*"])
    commit: list[str] = Field(default_factory=lambda: ["*"])


class AccessRules(BaseModel):
    """Access rules in nbmlops.yaml. Dataset keys are names or fnmatch patterns (``raw-*``);
    the first matching key applies, a dataset matched by none is open to everyone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    datasets: dict[str, DatasetAccess] = Field(default_factory=dict)


# --- registry: roles and promotion gates per model -----------------------------------------

ROLE_NAMES = ("viewer", "developer", "approver", "admin")
GATE_NAMES = ("metric", "beats_champion", "validation", "card", "scan", "approval")


class _Strict(BaseModel):
    """Refuses unknown keys naming the valid ones (pydantic alone says only "extra input")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)
            if unknown:
                raise ValueError(
                    f"unknown key {', '.join(repr(k) for k in unknown)}; valid: "
                    + ", ".join(cls.model_fields)
                )
        return data


class MetricGateSpec(_Strict):
    """The version's run metric ``name`` must lie within [min, max]."""

    name: str = Field(min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _a_bound(self) -> MetricGateSpec:
        if self.min is None and self.max is None:
            raise ValueError(f"metric gate {self.name!r} needs min or max (or both)")
        return self


class BeatsChampionSpec(_Strict):
    """Evaluate candidate and current holder on a holdout data version; the candidate must
    score at least ``min_delta`` better (ties pass with the default 0)."""

    metric: str = Field(
        min_length=1,
        description="accuracy/acc, f1, precision, recall, balanced_accuracy, r2, mae, mse, rmse",
    )
    holdout: str = Field(min_length=1, description="data version NAME@k (or NAME for latest)")
    target: str = Field(min_length=1, description="target column of the holdout frame")
    higher_is_better: bool | None = Field(default=None, description="default: from the metric")
    min_delta: float = 0.0


class ValidationGateSpec(_Strict):
    """``data`` must pass nbmlops.data.validate against reference version ``against``."""

    against: str = Field(min_length=1)
    data: str = Field(min_length=1)


class ScanGateSpec(_Strict):
    allow_incomplete: bool = Field(
        default=False,
        description="accept a scan that could not check everything (never a flagged one)",
    )


class ApprovalGateSpec(_Strict):
    count: int = Field(default=1, ge=1, description="approvals needed from distinct approvers")


class GateSpec(_Strict):
    """One gate: a mapping with exactly one of the gate names as its key."""

    metric: MetricGateSpec | None = None
    beats_champion: BeatsChampionSpec | None = None
    validation: ValidationGateSpec | None = None
    card: bool | None = None
    scan: bool | ScanGateSpec | None = None
    approval: bool | ApprovalGateSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_gate(cls, data: Any) -> Any:
        if isinstance(data, str) and data in GATE_NAMES:
            return {data: True}
        if not isinstance(data, dict) or len(data) != 1:
            raise ValueError(
                f"a gate is a mapping with one key, one of {', '.join(GATE_NAMES)} "
                f"(e.g. '- metric: {{name: acc, min: 0.8}}'), got {data!r}"
            )
        return data

    @property
    def kind(self) -> str:
        return next(name for name in GATE_NAMES if getattr(self, name) is not None)


class ModelRoles(_Strict):
    """User names per role ("*" means everyone). Roles rank viewer < developer < approver <
    admin; each includes the ones below it."""

    viewer: list[str] = Field(default_factory=lambda: ["*"])
    developer: list[str] = Field(default_factory=list)
    approver: list[str] = Field(default_factory=list)
    admin: list[str] = Field(default_factory=list)


class ModelRule(_Strict):
    """Roles and promotion gates of the models a key of ``registry.models`` matches."""

    roles: ModelRoles | None = Field(default=None, description="omitted: everyone has every role")
    gates: dict[str, list[GateSpec]] = Field(
        default_factory=dict, description="alias -> gates a version must pass to get it"
    )
    protected_aliases: list[str] = Field(
        default_factory=lambda: ["champion"],
        description="aliases only approvers may move (others: developers)",
    )


class RegistryScanSettings(_Strict):
    pip_audit: Literal["auto", "off"] = Field(
        default="auto",
        description="'auto' audits a model's pinned requirements with pip-audit when its "
        "vulnerability database answers (else the scan is 'incomplete'); 'off' skips it",
    )
    vulnerability_service: Literal["osv", "pypi"] = "osv"
    probe_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    audit_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    trusted_pickle_globals: list[str] = Field(
        default_factory=list,
        description="exact module.name globals (classes, functions) a model's pickles and "
        "skops files may load beyond the built-in allow list, e.g. mypkg.models.MyEstimator",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_module_trust(cls, data: Any) -> Any:
        if isinstance(data, dict) and "trusted_pickle_modules" in data:
            raise ValueError(
                "trusted_pickle_modules (trust every global of a package) is no longer read: "
                "list each class or function a model may load under trusted_pickle_globals, "
                "e.g. mypkg.models.MyEstimator"
            )
        return data

    @model_validator(mode="after")
    def _exact_globals(self) -> RegistryScanSettings:
        from nbmlops.core.registry.allowlist import GLOBAL_RE

        bad = [g for g in self.trusted_pickle_globals if not GLOBAL_RE.match(g)]
        if bad:
            raise ValueError(
                f"trusted_pickle_globals takes module.name entries, not {', '.join(map(repr, bad))}"
            )
        return self


class RegistrySettings(_Strict):
    """``registry:`` in nbmlops.yaml. Model keys are names or fnmatch patterns; the first
    matching key applies; a model no key matches has open roles and no gates."""

    models: dict[str, ModelRule] = Field(default_factory=dict)
    scan: RegistryScanSettings = Field(default_factory=RegistryScanSettings)
    lock_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="how long a promotion waits for another one on the same model",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _explain(cls, data: Any, handler: Any) -> Any:
        # Name the exact place (registry.models['churn*'].gates.champion[0]...): the
        # top-level error report of load_settings only knows the key 'registry'.
        try:
            return handler(data)
        except ValidationError as err:
            first = err.errors()[0]
            path = "registry" + "".join(
                f"[{p}]"
                if isinstance(p, int)
                else (f".{p}" if str(p).isidentifier() else f"[{str(p)!r}]")
                for p in first["loc"]
                if p not in ("MetricGateSpec", "ScanGateSpec", "ApprovalGateSpec", "bool")
            )
            msg = str(first["msg"]).removeprefix("Value error, ")
            got = first.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            raise ValueError(f"{path}: {msg}{shown}") from None


class LineageSettings(_Strict):
    """The lineage of untracked cells (``%load_ext nbmlops`` records every executed cell)."""

    untracked: bool = Field(
        default=True,
        description="record every executed cell (names read and bound, data digests); "
        "false switches it off",
    )
    max_digest_bytes: int = Field(
        default=256 * 2**20,
        ge=0,
        description="frames and arrays larger than this are recorded by shape and schema only",
    )


class MonitorSettings(_Strict):
    """Monitoring of served models."""

    dask_scheduler: str | None = Field(
        default=None,
        description="Dask scheduler (tcp://HOST:PORT) that computes drift and performance "
        "over the prediction log; default: this machine",
    )


class Settings(BaseModel):
    """Every setting nbmlops reads. Field descriptions are the user-facing documentation."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_assignment=True)

    project_dir: Path = Field(description="Folder the store paths are relative to.")
    home: Path | None = Field(None, description="nbmlops's own folder; default <project>/.nbmlops")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default a SQLite store in <home>/mlflow.db"
    )
    artifact_location: str | None = Field(
        None, description="Artifact root for new experiments; default <home>/artifacts"
    )
    experiment: str | None = Field(None, description="Experiment name; default the notebook's")
    user: str | None = Field(None, description="User recorded on runs; default the OS user")
    exit_flush_seconds: float = Field(
        30.0, ge=0, description="How long a closing process waits for unshipped runs"
    )
    ship: Literal["auto", "wait", "background", "defer"] = Field(
        "auto",
        description="When a tracked cell returns: 'background' at once (runs ship behind it), "
        "'wait' once its run is in MLflow, 'auto' is 'background' except in batch kernels "
        "(papermill, nbclient): there cells only journal and a detached shipper ships the "
        "runs once the kernel has exited; 'defer' only journals, and the "
        "process that started the kernel (nbmlops run, a pipeline) ships after it ends",
    )
    ship_wait_seconds: float = Field(
        120.0, gt=0, description="Longest wait for a run to reach MLflow in 'wait' mode"
    )
    handoff_seconds: float = Field(
        900.0,
        ge=0,
        description="How long a detached shipper keeps trying to ship the runs a process left "
        "unshipped at exit (0: none is started; `nbmlops sync` ships them)",
    )
    retry_max_seconds: float = Field(
        30.0, gt=0, description="Longest pause between retries when the store is down"
    )
    capture_models: bool = Field(True, description="Log fitted estimators the cell binds")
    capture_data: bool = Field(True, description="Digest frames and arrays the cell reads")
    capture_figures: bool = Field(True, description="Log matplotlib figures the cell draws")
    ignore: list[str] = Field(default_factory=list, description="Names never captured")
    redact_names: list[str] = Field(
        default_factory=list,
        description="Extra regular expressions (case-insensitive, searched in the name) for "
        "params, keys and assignments whose values are secrets and never recorded; "
        "password, api_key, token, secret... are built in",
    )
    redact_values: list[str] = Field(
        default_factory=list,
        description="Extra regular expressions for secret values, replaced wherever they "
        "appear (a group named 'secret' limits it to that part); URL passwords and "
        "well-known key formats are built in",
    )
    data_url: str | None = Field(
        None, description="Data store: a folder or fsspec URL; default <home>/data"
    )
    access: AccessRules = Field(
        default_factory=AccessRules, description="Who may read and commit which datasets"
    )
    openlineage_url: str | None = Field(
        None, description="OpenLineage HTTP endpoint (e.g. Marquez); default a file in <home>"
    )
    openlineage_namespace: str = Field("nbmlops", description="OpenLineage job namespace")
    trusted_loader_modules: list[str] = Field(
        default_factory=list,
        description="Custom MLflow loader modules you trust to be imported when loading models",
    )
    lineage: LineageSettings = Field(
        default_factory=LineageSettings,
        description="Lineage of untracked cells: lineage.untracked (on/off), "
        "lineage.max_digest_bytes",
    )
    registry: RegistrySettings = Field(
        default_factory=RegistrySettings,
        description="Model registry: roles and promotion gates per model (registry.models), "
        "security scan options (registry.scan)",
    )
    monitor: MonitorSettings = Field(
        default_factory=MonitorSettings,
        description="Monitoring: monitor.dask_scheduler (drift and performance on a Dask cluster)",
    )

    @field_validator("redact_names", "redact_values")
    @classmethod
    def _regexes(cls, patterns: list[str], info: ValidationInfo) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(
                    f"{pattern!r} is not a regular expression ({err}); write one Python "
                    f"regular expression per item of {info.field_name}"
                ) from None
        return patterns

    @property
    def home_dir(self) -> Path:
        home = self.home if self.home is not None else Path(HOME_DIR)
        return home if home.is_absolute() else (self.project_dir / home)

    @property
    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(self.home_dir / 'mlflow.db').as_posix()}"

    @property
    def resolved_artifact_location(self) -> str:
        if self.artifact_location:
            return self.artifact_location
        return (self.home_dir / "artifacts").resolve().as_uri()

    @property
    def resolved_user(self) -> str:
        """NBMLOPS_USER (or ``user:``), then JupyterHub's JUPYTERHUB_USER, then the OS user."""
        return self.user or os.environ.get("JUPYTERHUB_USER") or _os_user()

    @property
    def journal_dir(self) -> Path:
        return self.home_dir / "journal"

    @property
    def resolved_data_url(self) -> str:
        return self.data_url or str(self.home_dir / "data")

    @property
    def audit_path(self) -> Path:
        return self.home_dir / "audit.jsonl"

    @property
    def uses_default_store(self) -> bool:
        return not self.tracking_uri


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (some containers)
        return f"uid{os.getuid()}"


def find_project_dir(start: Path | None = None) -> Path:
    """The project folder for ``start`` (default: the working folder).

    Inside a git repository: the nearest folder up to the repository root that holds
    nbmlops.yaml or .nbmlops. Outside one: the nearest folder upwards holding nbmlops.yaml,
    or ``start`` itself when it holds .nbmlops. Otherwise ``start``. (A stray .nbmlops in
    /tmp or a home folder must not capture every folder below it.)
    """
    start = (start or Path.cwd()).resolve()
    chain = (start, *start.parents)
    repo_root = next((f for f in chain if (f / ".git").exists()), None)
    for folder in chain:
        if (folder / CONFIG_FILE).is_file():
            return folder
        if (folder / HOME_DIR).is_dir() and (repo_root is not None or folder == start):
            return folder
        if folder == repo_root:
            break
    return start


_FIELDS_FROM_ENV = {
    name: ENV_PREFIX + name.upper() for name in Settings.model_fields if name != "project_dir"
}


def load_settings(
    project_dir: str | os.PathLike | None = None,
    environ: dict[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read and validate settings; raise ConfigError naming the bad key, its source and the fix."""
    env = os.environ if environ is None else environ
    if project_dir is None and env.get("NBMLOPS_PROJECT_DIR"):
        project_dir = env["NBMLOPS_PROJECT_DIR"]
    folder = Path(project_dir).resolve() if project_dir else find_project_dir()

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    cfg_path = folder / CONFIG_FILE
    if cfg_path.is_file():
        for key, value in _read_yaml(cfg_path).items():
            values[key] = value
            sources[key] = str(cfg_path)

    if env.get("MLFLOW_TRACKING_URI"):
        values["tracking_uri"] = env["MLFLOW_TRACKING_URI"]
        sources["tracking_uri"] = "MLFLOW_TRACKING_URI"
    for field, var in _FIELDS_FROM_ENV.items():
        if env.get(var, "") != "":
            raw: Any = env[var]
            if field == "ignore":
                raw = [n.strip() for n in raw.split(",") if n.strip()]
            elif field in ("redact_names", "redact_values"):
                raw = _regex_list(raw, var)
            values[field] = raw
            sources[field] = var
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
            sources[key] = "argument"

    unknown = sorted(set(values) - set(Settings.model_fields) - {"project_dir"})
    if unknown:
        valid = ", ".join(sorted(set(Settings.model_fields) - {"project_dir"}))
        raise ConfigError(
            f"Unknown setting {', '.join(repr(k) for k in unknown)}",
            where=sources.get(unknown[0], "settings"),
            fix=f"Valid settings: {valid}.",
        )
    try:
        return Settings(project_dir=folder, **values)
    except ValidationError as err:
        first = err.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "?"
        got = values.get(key, "?")
        raise ConfigError(
            f"Setting {key!r} is invalid: {first['msg']} (got {got!r})",
            where=sources.get(key, "settings"),
            fix=f"Fix {key!r}: {Settings.model_fields[key].description}."
            if key in Settings.model_fields
            else None,
        ) from None


def _regex_list(raw: str, var: str) -> list[str]:
    """A JSON list of regexes, or one regex (commas belong to regexes, so no comma lists)."""
    if not raw.lstrip().startswith("["):
        return [raw]
    try:
        items = json.loads(raw)
    except ValueError as err:
        raise ConfigError(
            f"Cannot parse {raw!r} as a JSON list ({err})",
            where=var,
            fix=f'Set {var} to one regular expression or a JSON list: ["^db_", "pin$"].',
        ) from None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ConfigError(
            f"Expected a JSON list of strings, got {raw!r}",
            where=var,
            fix=f'Set {var} to one regular expression or a JSON list: ["^db_", "pin$"].',
        )
    return items


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(
            f"Cannot parse YAML: {err}", where=str(path), fix="Correct the YAML syntax."
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Expected a mapping of settings, got {type(data).__name__}",
            where=str(path),
            fix="Write settings as 'key: value' lines.",
        )
    return data
