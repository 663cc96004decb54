"""Monitoring of served models (also ``nbmlops.monitor``).

The reference defaults to the training data of the model's champion (the data version its
lineage records); the current data defaults to a window of the gateway's prediction log
(``last="1h"``, ``since=``/``until=``, ``rows=``).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from nbmlops.config import Settings
from nbmlops.exceptions import UsageError

if TYPE_CHECKING:
    import pandas as pd

    from nbmlops.core.monitor.drift import DriftReport
    from nbmlops.core.monitor.drift_time import DriftTimeline
    from nbmlops.core.monitor.profile import Profile
    from nbmlops.core.monitor.quality import QualityReport
    from nbmlops.core.monitor.traffic import Window

__all__ = [
    "drift",
    "drift_over_time",
    "log_fingerprint",
    "profile",
    "quality",
    "reference_data",
    "served_versions",
    "traffic",
    "update_profiles",
]


def _settings(settings: Settings | None) -> Settings:
    from nbmlops.api.tracking import project_settings

    return settings or project_settings()


def _split_model(model: str | None, alias: str) -> tuple[str | None, str]:
    if model is None:
        return None, alias
    name, _, at = str(model).partition("@")
    if not name:
        raise UsageError(f"cannot read the model {model!r}", fix="write NAME or NAME@alias")
    return name, at or alias


def _window(last: Any, since: Any, until: Any, rows: int | None) -> Window:
    from nbmlops.core.monitor.traffic import resolve_window

    return resolve_window(last, since, until, rows)


# drift and data quality


def reference_data(
    model: str, alias: str = "champion", *, settings: Settings | None = None
) -> tuple[pd.DataFrame, str]:
    """(frame, label) of the training data of ``model``'s ``alias`` version, from the data
    version its lineage recorded at registration."""
    from nbmlops.api.data import load
    from nbmlops.api.registry import model_registry

    name, alias = _split_model(model, alias)
    assert name is not None
    s = _settings(settings)
    reg = model_registry(s)
    aliases = reg.aliases(name)
    if alias not in aliases:
        known = ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())) or "none"
        raise UsageError(
            f"model {name!r} has no alias {alias!r} (its aliases: {known})",
            fix=f"promote a version (nbmlops registry promote {name} VERSION {alias}), name "
            "another alias with NAME@alias, or pass the reference data yourself",
        )
    version = aliases[alias]
    info = next((v for v in reg.versions(name) if v.version == version), None)
    data_versions = info.data_versions if info is not None else []
    if not data_versions:
        raise UsageError(
            f"{name} version {version} ({alias}) has no training data version in its lineage",
            fix="pass the reference yourself (a DataFrame, or a data version NAME@k committed "
            "with nbmlops.data.commit), or register a model trained in a %%track cell on "
            "committed data",
        )
    ref = data_versions[0]
    frame = load(ref, settings=s)
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise UsageError(
            f"the training data {ref} of {name} v{version} is a {type(frame).__name__}, not a DataFrame",
            fix="pass the reference frame yourself (reference=df)",
        )
    return frame, f"{ref} (training data of {name} v{version}, {alias})"


def traffic(
    model: str | None = None,
    *,
    last: str | float | None = None,
    since: str | float | None = None,
    until: str | float | None = None,
    rows: int | None = None,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """The input records the gateway logged in a window (default: the last hour), one row per
    record, with ``_ts``, ``_model``, ``_version`` and ``_request_id``."""
    from nbmlops.core.monitor.traffic import traffic_frame

    name, _ = _split_model(model, "champion")
    return traffic_frame(
        _settings(settings).home_dir, _window(last, since, until, rows), model=name
    )


def _current(
    current: Any,
    model: str | None,
    last: Any,
    since: Any,
    until: Any,
    rows: int | None,
    s: Settings,
) -> tuple[pd.DataFrame, str, str | None]:
    """(current frame, its label, the model it came from)."""
    from nbmlops.core.monitor.traffic import features_only, traffic_frame

    name, _ = _split_model(model, "champion")
    if current is not None:
        if isinstance(current, str):
            from nbmlops.api.data import load

            return load(current, settings=s), current, name
        return current, "current", name
    window = _window(last, since, until, rows)
    frame = traffic_frame(s.home_dir, window, model=name)
    if frame.empty:
        raise UsageError(
            f"the {window.label()} is empty: no successful predictions"
            + (f" of {name}" if name else ""),
            where=str(s.home_dir / "predictions"),
            fix="widen the window (last='24h', since='2026-12-01', rows=1000), check the model "
            "name, or send traffic to the gateway (nbmlops serve) first",
        )
    if name is None:
        models = sorted({str(m) for m in frame["_model"].dropna().unique()})
        if len(models) > 1:
            raise UsageError(
                f"the {window.label()} holds predictions of several models: {', '.join(models)}",
                fix="name one: model='NAME' (or --model NAME@alias)",
            )
        name = models[0] if models else None
    return features_only(frame), window.label(), name


def reference_frame(
    reference: Any, model: str | None, alias: str, s: Settings
) -> tuple[pd.DataFrame, str]:
    """The reference frame and its label: ``reference`` (a frame or ``NAME@k``), else the
    training data of ``model@alias``."""
    if reference is None:
        if model is None:
            raise UsageError(
                "no reference data and no model to take it from",
                fix="pass reference=df (or 'NAME@k'), or model='NAME' to compare with the "
                "training data of its champion",
            )
        return reference_data(model, alias, settings=s)
    if isinstance(reference, str):
        from nbmlops.api.data import load

        return load(reference, settings=s), reference
    return reference, "reference"


def served_columns(ref: pd.DataFrame, cur: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The reference's columns that the logged traffic has, and a note on the others.

    The gateway refuses a request that lacks one of the model's inputs (422 naming it), so a
    reference column absent from every logged request is not an input: the target, or a
    column the model does not take.
    """
    have = {str(c) for c in cur.columns}
    shared = [str(c) for c in ref.columns if str(c) in have]
    if not shared:
        raise UsageError(
            "the logged requests share no column with the reference data",
            fix=f"check the model; the reference has {', '.join(map(str, ref.columns[:12]))} "
            f"and the requests have {', '.join(sorted(have)[:12])}",
        )
    others = [str(c) for c in ref.columns if str(c) not in have]
    note = (
        [
            f"in the reference but in no logged request (the target, or not a model input): {', '.join(others)}"
        ]
        if others
        else []
    )
    return shared, note


def drift(
    reference: pd.DataFrame | str | None = None,
    current: pd.DataFrame | str | None = None,
    *,
    model: str | None = None,
    alias: str = "champion",
    last: str | float | None = None,
    since: str | float | None = None,
    until: str | float | None = None,
    rows: int | None = None,
    profiles: bool = False,
    settings: Settings | None = None,
    html: str | os.PathLike[str] | None = None,
    scheduler: Any = None,
    **options: Any,
) -> DriftReport:
    """Drift of ``current`` from ``reference``, per feature and for the dataset.

    Either side may be a DataFrame or a data version ``NAME@k``. Without ``reference``, the
    training data of ``model``'s ``alias`` (``NAME@alias`` works too) is used; without
    ``current``, the gateway's prediction log in the window (default: last hour).
    ``profiles=True`` reads the window from the stored profiles of the log (updated first),
    which costs the same for a month as for an hour. ``html`` writes the report there.
    ``scheduler`` (a Dask scheduler address or client; default ``monitor.dask_scheduler``)
    summarises the log's window on that cluster, with the same result.
    Other options go to :func:`nbmlops.core.monitor.drift.drift` (columns, numeric,
    categorical, test, thresholds, correction, drift_share, min_rows, multivariate).
    """
    from nbmlops.core.monitor.drift import drift as run

    s = _settings(settings)
    name, alias = _split_model(model, alias)
    if profiles:
        report = _drift_from_profiles(reference, name, alias, last, since, until, s, options)
    elif current is None and _cluster(scheduler, s) is not None:
        from nbmlops.api.monitor_cluster import drift_on_cluster

        report = drift_on_cluster(
            reference, model=name, alias=alias, last=last, since=since, until=until, rows=rows,
            scheduler=_cluster(scheduler, s), settings=s, options=options,
        )  # fmt: skip
    else:
        cur, cur_label, name = _current(current, name, last, since, until, rows, s)
        ref, ref_label = reference_frame(reference, name, alias, s)
        notes: list[str] = []
        if current is None and options.get("columns") is None:
            options["columns"], notes = served_columns(ref, cur)
        report = run(ref, cur, labels=(ref_label, cur_label), **options)
        report.notes[:0] = notes
    if html is not None:
        report.to_html(html)
    return report


def _cluster(scheduler: Any, s: Settings) -> Any:
    from nbmlops.api.monitor_cluster import scheduler_address

    return scheduler_address(scheduler, s)


def _drift_from_profiles(
    reference: Any,
    name: str | None,
    alias: str,
    last: Any,
    since: Any,
    until: Any,
    s: Settings,
    options: dict[str, Any],
) -> DriftReport:
    from nbmlops.core.monitor.drift import drift_of_summaries
    from nbmlops.core.monitor.summary import feature_kinds, summarize_column

    if name is None:
        raise UsageError("drift from profiles needs the model", fix="pass model='NAME'")
    if options.pop("multivariate", False):
        raise UsageError(
            "the multivariate test needs rows, and profiles keep none",
            fix="drop profiles=True (or --profiles) to run it on the log's rows",
        )
    ref, ref_label = reference_frame(reference, name, alias, s)
    columns = options.pop("columns", None)
    kinds, notes = feature_kinds(
        ref,
        [str(c) for c in (columns if columns is not None else ref.columns)],
        numeric=options.pop("numeric", None),
        categorical=options.pop("categorical", None),
        categorical_max=options.pop("categorical_max", 50),
    )
    window = _window(last, since, until, None)
    prof = profile(name, kinds=kinds, since=window.since, until=window.until, settings=s)
    if prof is None or prof.rows == 0:
        raise UsageError(
            f"no profiles of {name} in the {window.label()}",
            fix="widen the window (last='30d'), or send traffic first: profiles cover the "
            "windows of the log that have ended",
        )
    missing = [c for c in kinds if c not in prof.columns]
    if missing and columns is not None:
        raise UsageError(
            f"the profiles of {name} lack feature(s) {', '.join(missing)}",
            fix="name columns the gateway receives, or leave columns out",
        )
    if missing:  # not in any request: the target, or not a model input (see served_columns)
        kinds = {c: k for c, k in kinds.items() if c not in missing}
        notes.append(
            "in the reference but in no logged request (the target, or not a model input): "
            + ", ".join(missing)
        )
    summaries = {
        c: (summarize_column(ref[c], k, "reference"), prof.columns[c].summary())
        for c, k in kinds.items()
    }
    report = drift_of_summaries(
        summaries,
        labels=(ref_label, f"profiles of the {window.label()}"),
        reference_rows=len(ref),
        current_rows=prof.rows,
        **options,
    )
    report.notes[:0] = notes
    return report


def profile(
    model: str,
    *,
    kinds: dict[str, Any] | None = None,
    last: str | float | None = None,
    since: str | float | None = None,
    until: str | float | None = None,
    update: bool = True,
    window_seconds: float = 3600.0,
    settings: Settings | None = None,
) -> Profile | None:
    """The merged profile of ``model``'s traffic in a window (default: the last 30 days),
    after profiling the log's ended windows that have none yet (``update``)."""
    from nbmlops.core.monitor.profile_store import ProfileStore

    s = _settings(settings)
    name, _ = _split_model(model, "champion")
    assert name is not None
    if update:
        update_profiles(name, kinds=kinds, window_seconds=window_seconds, settings=s)
    if last is None and since is None:
        last = "30d"
    w = _window(last, since, until, None)
    return ProfileStore(s.home_dir).merged(name, w.since, w.until)


def update_profiles(
    model: str,
    *,
    kinds: dict[str, Any] | None = None,
    window_seconds: float = 3600.0,
    settings: Settings | None = None,
) -> int:
    """Profile the ended windows of ``model``'s traffic that have no profile yet; returns how
    many were written. ``kinds`` (feature -> numeric/categorical) default to the champion's
    training data, else to what the traffic holds."""
    from nbmlops.core.monitor.profile_store import update_profiles as run
    from nbmlops.core.monitor.summary import feature_kinds

    s = _settings(settings)
    name, alias = _split_model(model, "champion")
    assert name is not None
    if kinds is None:
        try:
            ref, _ = reference_data(name, alias, settings=s)
            kinds, _ = feature_kinds(
                ref,
                [str(c) for c in ref.columns],
                numeric=None,
                categorical=None,
                categorical_max=50,
            )
        except UsageError:
            kinds = None
    if kinds is None:
        from nbmlops.core.monitor.traffic import features_only

        sample = features_only(traffic(name, last="30d", rows=10_000, settings=s))
        kinds, _ = feature_kinds(
            sample,
            [str(c) for c in sample.columns],
            numeric=None,
            categorical=None,
            categorical_max=50,
        )
    return run(s.home_dir, name, kinds, window_seconds=window_seconds)


def quality(
    current: pd.DataFrame | str | None = None,
    *,
    reference: pd.DataFrame | str | None = None,
    schema: Any = None,
    model: str | None = None,
    alias: str = "champion",
    last: str | float | None = None,
    since: str | float | None = None,
    until: str | float | None = None,
    rows: int | None = None,
    window: str | float | None = "1h",
    range_margin: float = 0.0,
    settings: Settings | None = None,
) -> QualityReport:
    """Data quality of ``current`` per ``window`` against the schema of the training data
    (inferred as ``%validate`` infers it, or ``schema``: a pandera schema or a YAML path)."""
    from nbmlops.core.data.schema import infer_schema, load_schema
    from nbmlops.core.monitor.quality import quality as run
    from nbmlops.core.monitor.traffic import parse_duration

    s = _settings(settings)
    name, alias = _split_model(model, alias)
    if current is not None and not isinstance(current, str):
        cur = current
    else:
        from nbmlops.core.monitor.traffic import traffic_frame

        if isinstance(current, str):
            from nbmlops.api.data import load

            cur = load(current, settings=s)
        else:
            w = _window(last, since, until, rows)
            cur = traffic_frame(s.home_dir, w, model=name)
            if cur.empty:
                raise UsageError(
                    f"the {w.label()} is empty: no successful predictions",
                    fix="widen the window (last='24h') or send traffic to the gateway first",
                )
            if name is None:
                found = sorted({str(m) for m in cur["_model"].dropna().unique()})
                name = found[0] if len(found) == 1 else None
    if schema is None:
        ref, _ = reference_frame(reference, name, alias, s)
        if current is None:  # from the log: only the model's inputs (see served_columns)
            ref = ref[served_columns(ref, cur)[0]]
        schema = infer_schema(ref, range_margin=range_margin)
    elif isinstance(schema, (str, os.PathLike)):
        schema = load_schema(schema)
    seconds = None if window is None else parse_duration(window)
    return run(cur, schema, window=seconds)


# drift per feature over time, and what the prediction log serves

# Profiles are kept for windows of a minute or more: a shorter window would write thousands of
# profile rows an hour for little gain, so it is read from the log's rows.
_PROFILED_FROM = 60.0


def drift_over_time(
    reference: pd.DataFrame | str | None = None,
    *,
    model: str | None = None,
    version: int | None = None,
    alias: str = "champion",
    last: str | float | None = None,
    since: str | float | None = None,
    until: str | float | None = None,
    window: str | float = "1h",
    profiles: bool = True,
    settings: Settings | None = None,
    **options: Any,
) -> DriftTimeline:
    """Drift per feature of each ``window`` of ``model``'s logged traffic (default: the last
    24 hours; ``last``/``since``/``until`` as for :func:`drift`) from ``reference``.

    ``reference`` defaults to the training data of ``version`` (else of ``alias``'s version)
    from its lineage. Without ``model``, the one model the log holds. With ``profiles``, the
    log's ended windows are profiled first and read from their profiles, so only the open
    window is read row by row. Other options go to
    :func:`nbmlops.core.monitor.drift_time.drift_over_time` (columns, numeric, categorical,
    test, thresholds, correction, min_rows).
    """
    from nbmlops.core.monitor.drift_time import drift_over_time as run
    from nbmlops.core.monitor.drift_time import window_starts
    from nbmlops.core.monitor.profile_store import ProfileStore
    from nbmlops.core.monitor.served import served_versions
    from nbmlops.core.monitor.summary import feature_kinds
    from nbmlops.core.monitor.traffic import Window, parse_duration, traffic_frame

    s = _settings(settings)
    name, alias = _split_model(model, alias)
    seconds = parse_duration(window, "window")
    if last is None and since is None:
        last = "24h"
    w = _window(last, since, until, None)
    start, end = w.since, w.until if w.until is not None else time.time()
    if name is None:
        names = sorted({v["model"] for v in served_versions(s.home_dir)})
        if len(names) != 1:
            raise UsageError(
                "the prediction log holds no model" if not names else
                f"the prediction log holds several models: {', '.join(names)}",
                fix="name one: model='NAME'" if names else
                "serve one (nbmlops serve NAME@champion) and send it requests first",
            )  # fmt: skip
        name = names[0]
    if reference is None:
        ref, ref_label = _version_reference(name, version, alias, s)
    else:
        ref, ref_label = reference_frame(reference, name, alias, s)
    kinds, _ = feature_kinds(
        ref,
        [str(c) for c in options.get("columns") or ref.columns],
        numeric=options.get("numeric"),
        categorical=options.get("categorical"),
        categorical_max=options.get("categorical_max", 50),
    )
    stored = []
    if profiles and seconds >= _PROFILED_FROM:
        from nbmlops.core.monitor.profile_store import update_profiles as profile_log

        profile_log(s.home_dir, name, kinds, window_seconds=seconds)
        stored = ProfileStore(s.home_dir).window_profiles(name, version, start, end)
    assert start is not None
    starts = window_starts(start, end, seconds)
    # rows only for the windows the profiles do not cover (normally the open one)
    covered = _profiled_starts(stored, starts, seconds)
    open_starts = [t for t in starts if t not in covered]
    if open_starts:
        frame = traffic_frame(
            s.home_dir, Window(max(start, open_starts[0]), min(end, open_starts[-1] + seconds)),
            model=name,
        )  # fmt: skip
        if version is not None and not frame.empty:
            frame = frame[frame["_version"] == int(version)]
    else:
        frame = None
    if (frame is None or frame.empty) and not stored:
        raise UsageError(
            f"the {w.label()} holds no successful predictions of {name}"
            + (f" version {version}" if version is not None else ""),
            where=str(s.home_dir / "predictions"),
            fix="widen the window (last='7d'), check the model and version, or send traffic "
            "to the gateway (nbmlops serve) first",
        )
    if frame is not None:
        frame = frame.drop(columns=[c for c in ("_model", "_version", "_request_id") if c in frame])
    return run(
        ref,
        frame,
        window_seconds=seconds,
        since=start,
        until=end,
        profiles=stored,
        reference_label=ref_label,
        **options,
    )


def _profiled_starts(stored: list[Any], starts: list[float], seconds: float) -> set[float]:
    from nbmlops.core.monitor.drift_time import covering

    return {t for t in starts if covering(stored, t, t + seconds) is not None}


def _version_reference(
    name: str, version: int | None, alias: str, s: Settings
) -> tuple[pd.DataFrame, str]:
    """The training data of ``name`` ``version`` (else of its ``alias`` version)."""
    if version is None:
        return reference_data(name, alias, settings=s)
    from nbmlops.api.data import load
    from nbmlops.api.registry import model_registry

    info = next((v for v in model_registry(s).versions(name) if v.version == int(version)), None)
    if info is None:
        raise UsageError(
            f"model {name!r} has no version {version}", fix="name a registered version"
        )
    if not info.data_versions:
        raise UsageError(
            f"{name} version {version} has no training data version in its lineage",
            fix="pass the reference yourself (reference=df or a data version NAME@k), or "
            "register a model trained in a %%track cell on committed data",
        )
    ref = info.data_versions[0]
    return load(ref, settings=s), f"{ref} (training data of {name} v{version})"


def served_versions(settings: Settings | None = None) -> list[dict[str, Any]]:
    """The model versions the gateway's prediction log holds successful predictions of
    (model, version, requests, last), the most recently served first."""
    from nbmlops.core.monitor.served import served_versions as run

    return run(_settings(settings).home_dir)


def log_fingerprint(settings: Settings | None = None) -> tuple[Any, ...]:
    """A value that changes whenever a prediction is logged (one indexed lookup): what a
    panel polls to follow live traffic."""
    from nbmlops.core.monitor.served import log_fingerprint as run

    return run(_settings(settings).home_dir)
