"""Which model version answers a request: weighted routes, sticky keys, hot swap.

The routes live in one immutable :class:`RouteTable`. A request reads the current table once
(``router.table``) and keeps that reference until it has answered, so it is served by one
consistent set of models even if the table changes meanwhile. A poller thread re-resolves
the aliases every ``poll_seconds``; when one moved, it loads the new version completely
(download, safety checks, load, a warm-up prediction) and only then publishes a new table with
a single reference assignment. Requests already running keep the old model alive through their
reference; it is freed when the last of them finishes. A version that fails to load never
replaces a working one: the old version keeps serving and the failure shows in ``/health``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from nbmlops.core.serving.loader import ModelLoader, ModelRef, ServedModel

log = logging.getLogger("nbmlops.serving")

RETRY_FAILED_SECONDS = 30.0
_TWO_64 = float(2**64)


def sticky_position(key: str) -> float:
    """A request key's fixed place in [0, 1): the same key always lands on the same route."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _TWO_64


@dataclass(frozen=True)
class Route:
    """A model version on a route (``main``, ``canary`` or ``shadow``) and its share."""

    kind: str
    ref: ModelRef
    percent: float
    model: ServedModel

    def describe(self) -> dict[str, Any]:
        return {
            "route": self.kind,
            "spec": str(self.ref),
            "percent": self.percent,
            **self.model.describe(),
        }


@dataclass(frozen=True)
class RouteTable:
    """The routes answering requests (main first, then canaries) and the shadows."""

    routes: tuple[Route, ...]
    shadows: tuple[Route, ...] = ()
    generation: int = 0
    bounds: tuple[float, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        total, bounds = 0.0, []
        for route in self.routes:
            total += route.percent / 100.0
            bounds.append(total)
        object.__setattr__(self, "bounds", tuple(bounds))

    def pick(self, key: str | None = None) -> Route:
        """The route for a request: by its key's sticky position, else at random by weight."""
        routes = self.routes
        if len(routes) == 1:
            return routes[0]
        x = sticky_position(key) if key else random.random()
        for route, bound in zip(routes, self.bounds, strict=True):
            if x < bound:
                return route
        return routes[-1]

    def models(self) -> list[ServedModel]:
        return [r.model for r in (*self.routes, *self.shadows)]


@dataclass(frozen=True)
class SwapEvent:
    """An alias moved and the gateway now serves another version on a route."""

    at: float
    route: str
    spec: str
    old_version: int
    new_version: int


@dataclass(frozen=True)
class _Spec:
    kind: str
    ref: ModelRef
    percent: float


class ModelRouter:
    """Loads the routes' models, answers ``table``, and follows aliases in a poller thread."""

    def __init__(
        self,
        loader: ModelLoader,
        main: ModelRef,
        canaries: list[tuple[ModelRef, float]] | None = None,
        shadows: list[ModelRef] | None = None,
        poll_seconds: float = 1.0,
        on_swap: Callable[[SwapEvent, ServedModel], None] | None = None,
    ):
        canaries = canaries or []
        canary_total = sum(p for _, p in canaries)
        if canary_total >= 100:
            from nbmlops.core.serving.errors import BadModelSpec

            raise BadModelSpec(
                f"The canaries take {canary_total:g}% of traffic, leaving none for {main}",
                fix="Give the canaries less than 100% in total.",
            )
        self.loader = loader
        self.poll_seconds = poll_seconds
        self.on_swap = on_swap
        self._specs = [
            _Spec("main", main, 100.0 - canary_total),
            *(_Spec("canary", ref, pct) for ref, pct in canaries),
        ]
        self._shadow_specs = [_Spec("shadow", ref, 0.0) for ref in shadows or []]
        self._table: RouteTable | None = None
        self._loaded: dict[tuple[str, int], ServedModel] = {}
        self._failed: dict[tuple[str, int], float] = {}
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.history: list[SwapEvent] = []  # the last 50
        self.swaps = 0
        self.poll_errors = 0
        self.last_error: str | None = None
        self.polls = 0

    @property
    def table(self) -> RouteTable:
        table = self._table
        if table is None:
            raise RuntimeError("ModelRouter.load() has not run")
        return table

    @property
    def ready(self) -> bool:
        return self._table is not None

    def _model_for(self, ref: ModelRef) -> ServedModel:
        resolved = self.loader.resolve(ref)
        key = (resolved.name, resolved.version)
        model = self._loaded.get(key)
        if model is None:
            model = self._loaded[key] = self.loader.load(resolved)
        return model

    def load(self) -> RouteTable:
        """Load every route's model (raising on the first that cannot be served)."""
        routes = tuple(Route(s.kind, s.ref, s.percent, self._model_for(s.ref)) for s in self._specs)
        shadows = tuple(
            Route(s.kind, s.ref, s.percent, self._model_for(s.ref)) for s in self._shadow_specs
        )
        self._table = RouteTable(routes, shadows, generation=1)
        return self._table

    # --- following aliases -------------------------------------------------------------------
    def poll_once(self) -> list[SwapEvent]:
        """Re-resolve every alias; swap in versions that moved (loaded first). Never raises."""
        with self._poll_lock:
            self.polls += 1
            table = self.table
            current = (*table.routes, *table.shadows)
            replaced: dict[int, ServedModel] = {}
            for i, route in enumerate(current):
                if not route.ref.follows_alias:
                    continue
                try:
                    resolved = self.loader.resolve(route.ref)
                except Exception as err:
                    self.poll_errors += 1
                    self.last_error = f"resolving {route.ref}: {err}"
                    log.warning("alias poll failed: %s", self.last_error)
                    continue
                if resolved.version == route.model.version and resolved.name == route.model.name:
                    continue
                key = (resolved.name, resolved.version)
                if self._failed.get(key, 0.0) > time.monotonic():
                    continue
                try:
                    model = self._loaded.get(key) or self.loader.load(resolved)
                except Exception as err:
                    self._failed[key] = time.monotonic() + RETRY_FAILED_SECONDS
                    self.last_error = f"loading {resolved.name} version {resolved.version}: {err}"
                    log.error("not swapping %s: %s", route.ref, self.last_error)
                    continue
                self._loaded[key] = model
                replaced[i] = model
            if not replaced:
                return []
            new = [replace(r, model=replaced.get(i, r.model)) for i, r in enumerate(current)]
            n = len(table.routes)
            new_table = RouteTable(tuple(new[:n]), tuple(new[n:]), table.generation + 1)
            self._table = new_table  # the swap: one reference assignment
            events = []
            for i, model in replaced.items():
                old = current[i]
                event = SwapEvent(
                    time.time(), old.kind, str(old.ref), old.model.version, model.version
                )
                events.append(event)
                log.info(
                    "%s route %s: version %s -> %s",
                    event.route,
                    event.spec,
                    event.old_version,
                    event.new_version,
                )
                if self.on_swap is not None:
                    self.on_swap(event, model)
            self.history = (self.history + events)[-50:]
            self.swaps += len(events)
            # Forget models no route uses; requests still running hold their own reference.
            in_use = {m.key for m in new_table.models()}
            self._loaded = {k: m for k, m in self._loaded.items() if k in in_use}
            return events

    def start_polling(self) -> None:
        if self._thread is not None or self.poll_seconds <= 0:
            return
        if not any(s.ref.follows_alias for s in (*self._specs, *self._shadow_specs)):
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll_loop, name="nbmlops-alias-poller", daemon=True
        )
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # poll_once catches its own; this keeps the thread alive anyway
                log.exception("alias poller")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
