"""The serving gateway: a Starlette app over routed, hot-swappable MLflow model versions.

Routes:

* ``POST /predict``: records or MLflow's split format, checked against the routed model's
  signature (400 malformed JSON, 413 too large, 422 naming the field); answers
  ``{"predictions", "model", "version", "request_id"}`` with headers ``X-Model-Version`` and
  ``X-Request-Id`` (the client's own ``X-Request-Id`` when it sent a valid one, else a new
  one: the key that joins delayed labels to the prediction log). ``X-Request-Key`` makes the
  canary split sticky. A classifier's class probabilities are logged beside its predictions.
  With ``"params": {"predict_proba": true}`` a classifier answers class probabilities, one
  list per row in the order of ``"classes"``, which the answer adds (400 for a model without
  ``predict_proba``).
* ``GET /health``: 200 with the versions being served (503 until they are loaded, and
  ``"status": "refused"`` if a version served from the cache failed its checks again).
* ``GET /metrics``: Prometheus text.

:class:`RequestGuard`, a plain ASGI middleware in front of everything, refuses a foreign
``Host`` or any cross-origin ``Origin`` (403, against DNS rebinding and browser pages posting
to localhost), answers 413 as soon as a declared or counted body exceeds the limit (it stops
reading there, also for chunked bodies, and closes the connection), and 408 when the body does
not arrive within the read timeout. Nothing here logs request headers.

The app is plain Starlette (FastAPI's base): three routes need no request models, dependency
injection or OpenAPI, and importing FastAPI would add ~0.2 s to every start-up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as HttpRoute

from nbmlops.core.serving.errors import InvalidInput
from nbmlops.core.serving.loader import ModelLoader, ModelRef, parse_weighted
from nbmlops.core.serving.metrics import CONTENT_TYPE, GatewayMetrics
from nbmlops.core.serving.predlog import PredictionLog
from nbmlops.core.serving.resources import ResourceSampler
from nbmlops.core.serving.router import ModelRouter, Route
from nbmlops.core.serving.schema import parse_body, split_params
from nbmlops.core.serving.shadow import ShadowScorer

if TYPE_CHECKING:
    from nbmlops.config import Settings

log = logging.getLogger("nbmlops.serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_BIG_BODY = 32 * 1024  # bodies above this are parsed and predicted in a worker thread


@dataclass
class GatewayConfig:
    """Limits and policies of one gateway."""

    max_body_bytes: int = DEFAULT_MAX_BODY
    read_timeout: float = 10.0  # seconds for the whole request body to arrive
    allowed_hosts: tuple[str, ...] = ()  # extra Host names accepted besides loopback
    poll_seconds: float = 1.0
    shadow_queue: int = 1000
    predlog_queue: int = 20_000
    predlog_busy_timeout: float = 1.0  # how long a prediction-log write waits on a lock
    direct: bool = True  # call sklearn estimators directly (False: always pyfunc.predict)
    max_connections: int = 1000  # beyond this uvicorn answers 503 (bounds memory under floods)
    registry_process: bool = True  # ask the registry from a helper process (see registry.py)
    start_from_cache: bool = True  # serve checked cached copies at once, confirm afterwards
    log_probabilities: bool = True  # log a classifier's class probabilities (for estimates)
    resource_seconds: float = 5.0  # sample the process's CPU and memory this often (0: never)


class Gateway:
    """Models, routes, prediction log, shadow scorer and metrics of one serving process."""

    def __init__(
        self,
        settings: Settings,
        main: str | ModelRef,
        canaries: list[str] | None = None,
        shadows: list[str] | None = None,
        config: GatewayConfig | None = None,
        predlog: PredictionLog | None = None,
    ):
        self.settings = settings
        self.config = config or GatewayConfig()
        main_ref = main if isinstance(main, ModelRef) else ModelRef.parse(main)
        registry = None
        if self.config.registry_process:
            from nbmlops.core.serving.registry import RegistryWorker
            from nbmlops.core.tracking.store import normalize_uri

            registry = RegistryWorker.shared(
                normalize_uri(settings.resolved_tracking_uri), settings.resolved_tracking_uri
            )
        self.registry_worker = registry
        self.loader = ModelLoader(settings, direct=self.config.direct, registry=registry)
        self.router = ModelRouter(
            self.loader,
            main_ref,
            [parse_weighted(c) for c in canaries or []],
            [ModelRef.parse(s) for s in shadows or []],
            poll_seconds=self.config.poll_seconds,
        )
        self.predlog = predlog or PredictionLog(
            settings.home_dir,
            queue_size=self.config.predlog_queue,
            busy_timeout=self.config.predlog_busy_timeout,
        )
        self.shadow = ShadowScorer(self._shadow_routes, self.predlog, self.config.shadow_queue)
        self.metrics = GatewayMetrics(self._state)
        self.started_at: float | None = None
        self._proba_failed: set[tuple[str, int]] = set()
        self.resources = ResourceSampler(settings.home_dir, self.config.resource_seconds)

    def _shadow_routes(self) -> tuple[Route, ...]:
        table = self.router.current
        return table.shadows if table is not None else ()

    # --- lifecycle ---------------------------------------------------------------------------
    def prefetch(self) -> Gateway:
        """Start the registry helper and ask it what the cache cannot answer, so that those
        answers arrive while this process imports the models' libraries. Optional: ``start``
        asks anyway."""
        self.router.prefetch(self.config.start_from_cache)  # starts the helper if it asks
        if self.registry_worker is not None:
            self.registry_worker.start()  # no question yet: started at low priority
        return self

    def start(self) -> Gateway:
        """Load every model (raising if one cannot be served), then start the threads."""
        self.router.load(use_cache=self.config.start_from_cache)
        self.predlog.start()
        self.shadow.start()
        self.resources.start()
        self.started_at = time.time()
        self._audit_start()
        self.router.start_polling()
        return self

    def _audit_start(self) -> None:
        from nbmlops.core.audit import AuditLog

        table = self.router.table
        AuditLog(self.settings.audit_path).append(
            "model.deploy.serve",
            ", ".join(str(r.ref) for r in table.routes),
            user=self.settings.resolved_user,
            details={"routes": [r.describe() for r in (*table.routes, *table.shadows)]},
        )

    def close(self) -> None:
        self.router.stop()
        self.shadow.close()
        self.predlog.close()
        self.resources.close()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait for shadow scoring and the prediction log to catch up (tests, shutdown)."""
        return self.shadow.flush(timeout) and self.predlog.flush(timeout)

    # --- state -------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        routes = []
        table = self.router.current
        if table is not None:
            routes = [r.describe() for r in (*table.routes, *table.shadows)]
        return {
            "predlog": self.predlog.stats(),
            "shadow": dict(self.shadow.counts),
            "routes": routes,
            "swaps": self.router.swaps,
            "poll_errors": self.router.poll_errors,
        }

    def health(self) -> dict[str, Any]:
        table = self.router.current
        if table is None:
            if self.router.refusal is not None:
                return {"status": "refused", "error": self.router.refusal}
            return {"status": "loading"}
        return {
            "status": "ok",
            "confirmed": self.router.confirmed,
            "generation": table.generation,
            "routes": [r.describe() for r in table.routes],
            "shadows": [r.describe() for r in table.shadows],
            "versions": sorted({r.model.version for r in table.routes}),
            "swaps": [asdict(e) for e in self.router.history[-10:]],
            "last_error": self.router.last_error,
            "prediction_log": self.predlog.stats(),
            "started_at": self.started_at,
        }

    # --- one prediction ----------------------------------------------------------------------
    def score(
        self, route: Route, body: bytes, request_id: str, began: float
    ) -> tuple[int, dict[str, Any]]:
        """Parse, check and predict one request on ``route``; log it. Never raises."""
        model = route.model
        status, payload, records, outputs, error = 200, None, None, None, None
        reason = proba = classes = None
        answered = None  # what the client gets when it is not the predictions themselves
        try:
            try:
                payload, params = split_params(parse_body(body))
                rows = model.validate(payload)
            except InvalidInput:
                raise
            except Exception as err:
                # Reading and checking the body never reaches the model: whatever fails here
                # is about this input, never a model error (logged, as it means a check is
                # missing).
                log.exception("input not checked on %s v%s", model.name, model.version)
                raise InvalidInput(
                    422, f"The request could not be checked: {type(err).__name__}"
                ) from None
            records = rows.records
            outputs = model.predict(rows)  # turning rows into the model's input: InvalidInput
            if params.get("predict_proba"):
                # Asked for: the probabilities are the answer; the log keeps the predictions
                # (what monitoring joins labels to) with the probabilities beside them.
                answered, classes = probabilities(model, rows)
                proba = {"classes": classes, "p": answered}
            elif self.config.log_probabilities and model.has_probabilities:
                proba = self._probabilities(model, rows)
        except InvalidInput as err:
            status, error, reason = err.status, err.message, "invalid_input"
            answer: dict[str, Any] = {"error": err.message, "fields": err.fields}
        except Exception as err:  # the model itself failed: a server error, not the input's
            status, error, reason = 500, f"{type(err).__name__}: {err}", "model_error"
            log.exception("prediction failed on %s v%s", model.name, model.version)
            answer = {"error": f"The model failed to predict ({type(err).__name__})"}
        else:
            answer = {"predictions": outputs if answered is None else answered}
            if classes is not None:
                answer["classes"] = classes
        answer.update(model=model.name, version=model.version, request_id=request_id)
        seconds = time.perf_counter() - began
        self.metrics.observe(model.name, model.version, route.kind, status, seconds, reason)
        self.predlog.record(
            request_id,
            route.kind,
            model.name,
            model.version,
            status,
            seconds * 1000.0,
            inputs=records,
            outputs=outputs,
            error=error,
            proba=proba,
        )
        table = self.router.current
        if status == 200 and route.kind != "shadow" and table is not None and table.shadows:
            self.shadow.submit(request_id, payload)
        return status, answer

    def _probabilities(self, model: Any, rows: Any) -> dict[str, Any] | None:
        """The class probabilities to log; a failure here never fails the prediction."""
        try:
            return model.predict_proba(rows)
        except Exception as err:
            if model.key not in self._proba_failed:  # once per version, not once per request
                self._proba_failed.add(model.key)
                log.warning(
                    "%s v%s: class probabilities not logged (%s: %s)",
                    model.name, model.version, type(err).__name__, err,
                )  # fmt: skip
            return None


def probabilities(model: Any, rows: Any) -> tuple[Any, list[Any]]:
    """(class probabilities per row, the classes in their column order) from the served
    estimator's ``predict_proba``; InvalidInput(400) when the model has none."""
    if not model.has_probabilities:
        estimator = model.estimator
        what = type(estimator).__name__ if estimator is not None else f"a {model.flavor} model"
        raise InvalidInput(
            400,
            f"{model.name} v{model.version} ({what}) has no predict_proba, so it cannot answer "
            "class probabilities; ask without params.predict_proba for its predictions",
            ["params.predict_proba"],
        )
    proba = model.predict_proba(rows)
    return proba["p"], proba["classes"]


def _json_bytes(answer: dict[str, Any]) -> bytes:
    try:
        return json.dumps(answer, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:  # NaN/inf in predictions: JSON has no such numbers, send null
        return json.dumps(_nan_to_none(answer), separators=(",", ":")).encode()


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


class _Refused(Exception):
    def __init__(self, status: int, reason: str, message: str):
        self.status, self.reason, self.message = status, reason, message


class RequestGuard:
    """Host/Origin checks, body-size limit and body read timeout, before any route runs."""

    def __init__(self, app: Callable[..., Awaitable[None]], gateway: Gateway):
        self.app = app
        self.gateway = gateway
        config = gateway.config
        self.limit = config.max_body_bytes
        self.read_timeout = config.read_timeout
        self.names = {n.lower() for n in (*LOOPBACK_NAMES, *config.allowed_hosts)}

    def _host_ok(self, host: bytes | None, port: int | None) -> bool:
        if not host:
            return False
        text = host.decode("latin-1").lower()
        if text.startswith("["):  # [::1]:8000
            name, _, rest = text[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            name, sep, port_text = text.rpartition(":")
            if not sep:
                name, port_text = text, ""
        if name not in self.names:
            return False
        if not port_text:
            return True
        return port_text.isdigit() and (port is None or int(port_text) == port)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = length = rid = key = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"content-length":
                length = value
            elif name == b"x-request-id":
                rid = value
            elif name == b"x-request-key":
                key = value
        server = scope.get("server")
        try:
            port = server[1] if server else None
            if not self._host_ok(host, port):
                raise _Refused(
                    403,
                    "host",
                    "Host not allowed: the gateway answers only on "
                    "127.0.0.1/localhost (allow others with --allow-host)",
                )
            if origin is not None and origin.lower() != b"http://" + host.lower():  # type: ignore[union-attr]
                raise _Refused(403, "origin", "Cross-origin requests are not allowed")
            if scope["method"] in ("POST", "PUT", "PATCH"):
                if length is not None:
                    if not length.isdigit():
                        raise _Refused(400, "bad_length", "Invalid Content-Length")
                    if int(length) > self.limit:
                        raise _Refused(413, "too_large", self._too_large())
                body = await self._read_body(receive)
                if body is None:
                    return  # the client went away
                scope["nbmlops.body"] = body
                receive = _replay(body)
        except _Refused as refused:
            self.gateway.metrics.reject(refused.reason)
            log.info("refused %s %s: %s", scope["method"], scope["path"], refused.reason)
            await _send_json(send, refused.status, {"error": refused.message}, close=True)
            return
        scope["nbmlops.request_id"] = (
            rid.decode("latin-1") if rid and _REQUEST_ID_RE.match(rid.decode("latin-1")) else None
        )
        scope["nbmlops.request_key"] = key.decode("latin-1") if key else None
        await self.app(scope, receive, send)

    def _too_large(self) -> str:
        return f"Request body larger than the limit of {self.limit} bytes"

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.read_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.limit:
                        raise _Refused(413, "too_large", self._too_large())
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise _Refused(
                408,
                "read_timeout",
                f"The request body did not arrive within {self.read_timeout:g} s",
            ) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _send_json(send: Send, status: int, answer: dict[str, Any], close: bool = False) -> None:
    body = json.dumps(answer).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class PredictEndpoint:
    """``POST /predict`` as a raw ASGI app (the guard has already read and bounded the body)."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        began = time.perf_counter()
        gateway = self.gateway
        body = scope.get("nbmlops.body")
        if body is None:  # only when the app runs without its guard (tests of the app alone)
            body = await _read_all(receive)
        request_id = scope.get("nbmlops.request_id") or uuid.uuid4().hex
        table = gateway.router.current
        if table is None:
            refusal = gateway.router.refusal
            error = "The gateway is still loading" if refusal is None else refusal
            await _send_json(send, 503, {"error": error, "request_id": request_id})
            return
        route = table.pick(scope.get("nbmlops.request_key"))
        if len(body) > _BIG_BODY:
            status, answer = await run_in_threadpool(gateway.score, route, body, request_id, began)
        else:
            status, answer = gateway.score(route, body, request_id, began)
        content = _json_bytes(answer)
        model = route.model
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"x-model-name", quote(model.name, safe="").encode()),
            (b"x-model-version", str(model.version).encode()),
            (b"x-model-route", route.kind.encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


async def _read_all(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def create_app(gateway: Gateway) -> Starlette:
    """The ASGI app of a started (or starting) gateway."""

    async def health(request: Request) -> Response:
        state = gateway.health()
        return Response(
            _json_bytes(state),
            status_code=200 if state["status"] == "ok" else 503,
            media_type="application/json",
        )

    async def metrics(request: Request) -> Response:
        return Response(gateway.metrics.render(), media_type=CONTENT_TYPE)

    # /predict is a plain ASGI endpoint: no Request/Response objects on the hot path (they
    # cost more than the JSON parsing).
    app = Starlette(
        routes=[
            HttpRoute("/predict", PredictEndpoint(gateway), methods=["POST"]),
            HttpRoute("/health", health, methods=["GET"]),
            HttpRoute("/metrics", metrics, methods=["GET"]),
        ],
        middleware=[Middleware(RequestGuard, gateway=gateway)],
    )
    app.state.gateway = gateway
    return app
