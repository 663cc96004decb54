"""Lineage side effects of shipping a run: local lineage records and OpenLineage events."""

from __future__ import annotations

import logging
from typing import Any

from nbmlops.config import Settings
from nbmlops.core.tracking.journal import RunRecords, now_ms

log = logging.getLogger("nbmlops.shipper")


class RunLineage:
    """Lineage side effects of shipping a run: the local lineage records and OpenLineage
    events. Both are best effort: they never stop a run from reaching MLflow."""

    def __init__(self, settings: Settings):
        from nbmlops.core.lineage.openlineage import LineageEmitter
        from nbmlops.core.lineage.store import LineageStore

        self.settings = settings
        self.store = LineageStore(settings.home_dir / "lineage.db")
        self.emitter = LineageEmitter(settings)
        self._data_store: Any = None
        self.errors: list[str] = []

    def versions(self, digest: str) -> list[str]:
        """Committed data versions with this content (``NAME@k``), oldest first."""
        try:
            if self._data_store is None:
                from nbmlops.core.data.store import DataStore

                self._data_store = DataStore(self.settings.resolved_data_url)
            return [v.ref for v in self._data_store.find_digest(digest)]
        except Exception:
            return []

    @staticmethod
    def _job(run: RunRecords) -> str:
        start = run.start or {}
        return f"{start.get('experiment') or 'Default'}.{start.get('name') or 'run'}"

    @staticmethod
    def _source(run: RunRecords) -> str | None:
        note = (run.start or {}).get("tags", {}).get("mlflow.note.content", "")
        return note.removeprefix("```python\n").removesuffix("\n```") or None

    def start(self, run: RunRecords, run_id: str) -> None:
        start = run.start or {}
        self.emitter.emit(
            "START",
            run_key=run.key,
            job_name=self._job(run),
            ts_ms=start.get("ts") or now_ms(),
            datasets=start.get("datasets", []),
            run_id=run_id,
            source_code=self._source(run),
            versions=self.versions,
        )

    def end(
        self,
        run: RunRecords,
        run_id: str,
        status: str,
        end_ts: int,
        model_ids: dict[str, str],
        killed: str | None,
    ) -> None:
        start, end = run.start or {}, run.end or {}
        datasets = end.get("datasets") or start.get("datasets", [])
        models = end.get("models", [])
        try:
            self.store.record_run(
                run.key,
                run_id=run_id,
                name=start.get("name") or "run",
                experiment=start.get("experiment") or "Default",
                status=status,
                start_ms=start.get("ts") or end_ts,
                end_ms=end_ts,
                source=start.get("tags", {}).get("mlflow.source.name"),
                datasets=datasets,
                models=models,
                tracking_uri=self.settings.resolved_tracking_uri,
                logged_model_ids=model_ids,
            )
        except Exception as err:
            self.errors.append(f"lineage record of {run.key}: {err}")
            log.warning("nbmlops: lineage not recorded for run %s: %s", run_id, err)
        state = {"FINISHED": "COMPLETE", "KILLED": "ABORT"}.get(status, "FAIL")
        self.emitter.emit(
            state,
            run_key=run.key,
            job_name=self._job(run),
            ts_ms=end_ts,
            datasets=datasets,
            models=models,
            run_id=run_id,
            source_code=self._source(run),
            error=killed or end.get("tags", {}).get("nbmlops.error"),
            versions=self.versions,
        )
