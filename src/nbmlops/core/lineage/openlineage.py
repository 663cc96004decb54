"""OpenLineage run events (START, COMPLETE, FAIL) for tracked runs, through openlineage-python.

Events go to ``<home>/openlineage/events.jsonl`` by default, or to an HTTP endpoint such as
Marquez when ``openlineage_url`` is set. They are sent by the shipper thread, never from a
cell; a failure to emit is counted and logged, and never blocks shipping to MLflow.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from nbmlops.config import Settings
from nbmlops.core.tracking.redact import redactor_for

log = logging.getLogger("nbmlops.openlineage")

PRODUCER = "https://github.com/nbmlops/nbmlops"
_OL_TYPES = {"int": "INTEGER", "float": "DOUBLE", "bool": "BOOLEAN", "datetime": "TIMESTAMP"}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def _ol_type(dtype: str) -> str:
    for key, value in _OL_TYPES.items():
        if key in dtype:
            return value
    return "STRING" if dtype in ("object", "str", "string", "category") else dtype.upper()


class LineageEmitter:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._client: Any = None
        self.emitted = 0
        self.errors: list[str] = []

    @property
    def client(self) -> Any:
        if self._client is None:
            from openlineage.client import OpenLineageClient
            from openlineage.client.transport import Transport

            transport: Transport
            if self.settings.openlineage_url:
                from openlineage.client.transport.http import HttpConfig, HttpTransport

                transport = HttpTransport(
                    HttpConfig(url=self.settings.openlineage_url, timeout=5.0)
                )
            else:
                from openlineage.client.transport.file import FileConfig, FileTransport

                folder = self.settings.home_dir / "openlineage"
                folder.mkdir(parents=True, exist_ok=True)
                transport = FileTransport(
                    FileConfig(log_file_path=str(folder / "events.jsonl"), append=True)
                )
            self._client = OpenLineageClient(transport=transport)
        return self._client

    def _datasets(self, datasets: list[dict[str, Any]], role: str, versions: Any) -> list[Any]:
        from openlineage.client.event_v2 import InputDataset, OutputDataset
        from openlineage.client.generated.dataset_version_dataset import DatasetVersionDatasetFacet
        from openlineage.client.generated.schema_dataset import (
            SchemaDatasetFacet,
            SchemaDatasetFacetFields,
        )

        cls = InputDataset if role == "input" else OutputDataset
        out = []
        namespace = self.settings.resolved_data_url
        for d in datasets:
            if d.get("role", "input") != role:
                continue
            name, version = d["name"], d["digest"]
            refs = versions(d["digest"]) if versions else []
            if refs:
                name, _, k = refs[-1].partition("@")
                version = f"{k} ({d['digest']})"
            facets: dict[str, Any] = {"version": DatasetVersionDatasetFacet(datasetVersion=version)}
            if d.get("schema"):
                facets["schema"] = SchemaDatasetFacet(
                    fields=[
                        SchemaDatasetFacetFields(name=str(k), type=_ol_type(str(v)))
                        for k, v in d["schema"].items()
                    ]
                )
            out.append(cls(namespace=namespace, name=name, facets=facets))
        return out

    def emit(
        self,
        state: str,
        *,
        run_key: str,
        job_name: str,
        ts_ms: int,
        datasets: list[dict[str, Any]] | None = None,
        models: list[dict[str, Any]] | None = None,
        run_id: str | None = None,
        source_code: str | None = None,
        error: str | None = None,
        versions: Any = None,
    ) -> bool:
        """Send one run event; False (and counted) when it could not be sent."""
        # Journals written before redaction existed still hold secrets: redact here too.
        redactor = redactor_for(self.settings)
        source_code = redactor.code(source_code) if source_code else source_code
        error = redactor.text(error) if error else error
        try:
            from openlineage.client.event_v2 import Job, OutputDataset, Run, RunEvent, RunState
            from openlineage.client.generated.error_message_run import ErrorMessageRunFacet
            from openlineage.client.generated.source_code_job import SourceCodeJobFacet

            run_facets: dict[str, Any] = {}
            if error:
                run_facets["errorMessage"] = ErrorMessageRunFacet(
                    message=error, programmingLanguage="python"
                )
            job_facets: dict[str, Any] = {}
            if source_code:
                job_facets["sourceCode"] = SourceCodeJobFacet(
                    language="python", sourceCode=source_code
                )
            outputs = self._datasets(datasets or [], "output", versions)
            for m in models or []:
                outputs.append(
                    OutputDataset(
                        namespace=redactor.text(self.settings.resolved_tracking_uri),
                        name=f"models/{run_id or run_key}/{m['name']}",
                    )
                )
            event = RunEvent(
                eventType=RunState[state],
                eventTime=_iso(ts_ms),
                run=Run(runId=str(uuid.UUID(run_key)), facets=run_facets),
                job=Job(
                    namespace=self.settings.openlineage_namespace, name=job_name, facets=job_facets
                ),
                inputs=self._datasets(datasets or [], "input", versions),
                outputs=outputs,
                producer=PRODUCER,
            )
            self.client.emit(event)
            self.emitted += 1
            return True
        except Exception as err:  # lineage must never stop runs from reaching MLflow
            self.errors.append(f"{state} {job_name}: {type(err).__name__}: {err}")
            log.warning("nbmlops: OpenLineage event not sent: %s", err)
            return False
