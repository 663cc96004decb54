"""Prometheus metrics of one gateway, in its own CollectorRegistry (never the global one).

Per request: ``nbmlops_requests_total`` and ``nbmlops_request_latency_seconds`` labelled by
model, version and route (and status), ``nbmlops_request_errors_total`` by reason. Read at
scrape time from the gateway's state: the prediction log's written/spooled/dropped/replayed
rows, its queue, shadow outcomes, swaps and the versions being served.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _StateCollector(Collector):
    """Metrics computed from the gateway's counters when scraped (no per-request cost)."""

    def __init__(self, state: Callable[[], dict[str, Any]]):
        self._state = state

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        state = self._state()
        log = state.get("predlog") or {}
        rows = CounterMetricFamily(
            "nbmlops_predlog_rows",
            "Prediction log rows by outcome: written to the database, spooled to a local "
            "JSONL file while the sink failed, replayed from the spool, dropped (queue full)",
            labels=["outcome"],
        )
        for outcome in ("written", "spooled", "replayed", "dropped"):
            rows.add_metric([outcome], float(log.get(outcome, 0)))
        yield rows
        yield GaugeMetricFamily(
            "nbmlops_predlog_queue_rows",
            "Rows waiting for the prediction log writer",
            value=float(log.get("queued", 0)),
        )
        yield CounterMetricFamily(
            "nbmlops_predlog_sink_errors",
            "Failed writes to the prediction log database",
            value=float(log.get("sink_errors", 0)),
        )
        shadow = CounterMetricFamily(
            "nbmlops_shadow_requests",
            "Requests mirrored to shadow models, by outcome (scored, failed, dropped)",
            labels=["outcome"],
        )
        for outcome, n in (state.get("shadow") or {}).items():
            shadow.add_metric([outcome], float(n))
        yield shadow
        served = GaugeMetricFamily(
            "nbmlops_served_model",
            "Model versions being served (1 per route)",
            labels=["model", "version", "route", "spec"],
        )
        for route in state.get("routes", []):
            served.add_metric(
                [route["name"], str(route["version"]), route["route"], route["spec"]], 1.0
            )
        yield served
        yield CounterMetricFamily(
            "nbmlops_model_swaps",
            "Hot swaps after an alias moved",
            value=float(state.get("swaps", 0)),
        )
        yield CounterMetricFamily(
            "nbmlops_alias_poll_errors",
            "Alias look-ups that failed (the old version kept serving)",
            value=float(state.get("poll_errors", 0)),
        )


class GatewayMetrics:
    """Counters and the latency histogram, with label children cached per combination."""

    def __init__(self, state: Callable[[], dict[str, Any]] | None = None):
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "nbmlops_requests",
            "Prediction requests answered, by model version, route and HTTP status",
            ["model", "version", "route", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "nbmlops_request_errors",
            "Prediction requests answered with an error, by model version, route and reason",
            ["model", "version", "route", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nbmlops_request_latency_seconds",
            "Time from the parsed request to the prediction, by model version and route",
            ["model", "version", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            "nbmlops_rejected_requests",
            "Requests refused before routing: foreign host or origin, body too large, read timeout",
            ["reason"],
            registry=self.registry,
        )
        if state is not None:
            self.registry.register(_StateCollector(state))
        self._children: dict[tuple[Any, ...], Any] = {}

    def observe(
        self,
        model: str,
        version: Any,
        route: str,
        status: int,
        seconds: float,
        reason: str | None = None,
    ) -> None:
        key = (model, version, route, status)
        children = self._children.get(key)
        if children is None:
            v = str(version)
            children = self._children[key] = (
                self.requests.labels(model, v, route, str(status)),
                self.latency.labels(model, v, route),
            )
        children[0].inc()
        children[1].observe(seconds)
        if status >= 400:
            self.errors.labels(model, str(version), route, reason or str(status)).inc()

    def reject(self, reason: str) -> None:
        self.rejected.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
