"""Which model version answers a request: weighted routes, sticky keys, hot swap.

The routes live in one immutable :class:`RouteTable`. A request reads the current table once
(``router.table``) and keeps that reference until it has answered, so it is served by one
consistent set of models even if the table changes meanwhile. A poller thread re-resolves
the aliases every ``poll_seconds``; when one moved, it loads the new version completely
(download, safety checks, load, a warm-up prediction) and only then publishes a new table with
a single reference assignment. Requests already running keep the old model alive through their
reference; it is freed when the last of them finishes. A version that fails to load never
replaces a working one: the old version keeps serving and the failure shows in ``/health``.

Start-up from the cache: when the serving cache holds a checked copy of the version a ref
meant when the registry was last asked (see :mod:`~nbmlops.core.serving.cache`), that copy is
checked again (structure, recorded digest and scan verdict) and served at once, without
waiting for the registry. The poller then asks the registry straight away, whatever
``poll_seconds`` says, until it has answered for every such route: an alias that moved while
the gateway was down is swapped as any moved alias is; a version whose scan verdict or digest
changed is checked again, and if it fails, the gateway stops serving (``/health`` says
``refused``, ``/predict`` answers 503) until the registry names versions that pass.
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

from nbmlops.core.serving.loader import (
    CachedCopyUnusable,
    ModelLoader,
    ModelRef,
    ResolvedVersion,
    ServedModel,
)

log = logging.getLogger("nbmlops.serving")

RETRY_FAILED_SECONDS = 30.0
CONFIRM_RETRY_SECONDS = 1.0  # how soon an unanswered start-up question is asked again
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
        self._failed: dict[tuple[str, int], tuple[float, Exception]] = {}
        self._unconfirmed: set[int] = set()  # routes served from the cache, not yet re-asked
        self.refusal: str | None = None  # why a version served from the cache was withdrawn
        self._generation = 0
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
    def current(self) -> RouteTable | None:
        """The table answering requests now; None while loading or after a withdrawal."""
        return self._table

    @property
    def ready(self) -> bool:
        return self._table is not None

    @property
    def confirmed(self) -> bool:
        """The registry has answered for every route since start-up."""
        return not self._unconfirmed and self.refusal is None

    def _all_specs(self) -> list[_Spec]:
        return [*self._specs, *self._shadow_specs]

    def prefetch(self, use_cache: bool = True) -> None:
        """Ask the registry now about the refs the cache cannot answer (their answers are read
        in :meth:`load`)."""
        for spec in self._all_specs():
            if not use_cache or self.loader.cached(spec.ref) is None:
                self.loader.prefetch(spec.ref)

    def _model_for(self, ref: ModelRef) -> ServedModel:
        resolved = self.loader.resolve(ref)
        self.loader.remember(ref, resolved)
        key = (resolved.name, resolved.version)
        model = self._loaded.get(key)
        if model is None:
            failed = self._failed.get(key)
            if failed is not None and failed[0] > time.monotonic():
                raise failed[1]
            try:
                model = self.loader.load(resolved)
            except Exception as err:
                self._failed[key] = (time.monotonic() + RETRY_FAILED_SECONDS, err)
                raise
            self._failed.pop(key, None)
            self._loaded[key] = model
        return model

    def _cached_model(self, ref: ModelRef) -> ServedModel | None:
        """The version the cache's records name for ``ref``, loaded from its checked copy;
        None when there is no record or the copy is unusable (the registry is asked then)."""
        cached = self.loader.cached(ref)
        if cached is None:
            return None
        key = (cached.name, cached.version)
        model = self._loaded.get(key)
        if model is None:
            try:
                model = self.loader.load(cached, offline=True)
            except CachedCopyUnusable:
                return None
            self._loaded[key] = model
        return model

    def load(self, use_cache: bool = True) -> RouteTable:
        """Load every route's model (raising on the first that cannot be served): from the
        cache's checked copies where it has them (``use_cache``), else through the registry."""
        models: list[ServedModel] = []
        unconfirmed: set[int] = set()
        for i, spec in enumerate(self._all_specs()):
            model = self._cached_model(spec.ref) if use_cache else None
            if model is None:
                model = self._model_for(spec.ref)
            else:
                unconfirmed.add(i)
            models.append(model)
        n = len(self._specs)
        routes = tuple(
            Route(s.kind, s.ref, s.percent, m) for s, m in zip(self._specs, models[:n], strict=True)
        )
        shadows = tuple(
            Route(s.kind, s.ref, s.percent, m)
            for s, m in zip(self._shadow_specs, models[n:], strict=True)
        )
        self._generation += 1
        self._unconfirmed = unconfirmed
        self._table = RouteTable(routes, shadows, generation=self._generation)
        return self._table

    # --- following aliases -------------------------------------------------------------------
    def poll_once(self) -> list[SwapEvent]:
        """Re-resolve every alias (and every route served from the cache and not yet
        confirmed); swap in versions that moved (loaded first). Never raises."""
        with self._poll_lock:
            self.polls += 1
            table = self._table
            if table is None:
                if self.refusal is not None:
                    self._recover()
                return []
            current = (*table.routes, *table.shadows)
            replaced: dict[int, ServedModel] = {}
            for i, route in enumerate(current):
                confirming = i in self._unconfirmed
                if not (route.ref.follows_alias or confirming):
                    continue
                try:
                    resolved = self.loader.resolve(route.ref)
                except Exception as err:
                    self.poll_errors += 1
                    self.last_error = f"resolving {route.ref}: {err}"
                    log.warning("alias poll failed: %s", self.last_error)
                    continue
                self.loader.remember(route.ref, resolved)
                if resolved.version == route.model.version and resolved.name == route.model.name:
                    if confirming and not self._confirm(route, resolved):
                        return []
                    self._unconfirmed.discard(i)
                    continue
                key = (resolved.name, resolved.version)
                failed = self._failed.get(key)
                if failed is not None and failed[0] > time.monotonic():
                    continue
                try:
                    model = self._loaded.get(key) or self.loader.load(resolved)
                except Exception as err:
                    self._failed[key] = (time.monotonic() + RETRY_FAILED_SECONDS, err)
                    self.last_error = f"loading {resolved.name} version {resolved.version}: {err}"
                    log.error("not swapping %s: %s", route.ref, self.last_error)
                    continue
                self._loaded[key] = model
                replaced[i] = model
                self._unconfirmed.discard(i)
            if not replaced:
                return []
            new = [replace(r, model=replaced.get(i, r.model)) for i, r in enumerate(current)]
            n = len(table.routes)
            self._generation += 1
            new_table = RouteTable(tuple(new[:n]), tuple(new[n:]), self._generation)
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

    def _confirm(self, route: Route, resolved: ResolvedVersion) -> bool:
        """The registry still names the version served from the cache: check it again if its
        scan verdict or digest changed. False (and no table) when it no longer passes."""
        try:
            self.loader.reconfirm(route.model, resolved)
        except Exception as err:
            self.refusal = (
                f"{route.ref} -> version {route.model.version} no longer passes its checks: {err}"
            )
            self.last_error = self.refusal
            log.error("withdrawn: %s", self.refusal)
            self._table = None  # nothing is served until the registry names versions that pass
            self._loaded.pop(route.model.key, None)
            return False
        log.info("%s: the registry confirms version %s", route.ref, route.model.version)
        return True

    def _recover(self) -> None:
        """After a withdrawal: load every route through the registry again."""
        try:
            self.load(use_cache=False)
        except Exception as err:
            self.last_error = f"{self.refusal} (still: {err})" if self.refusal else str(err)
            return
        log.info("serving again after the withdrawal: %s", self.refusal)
        self.refusal = None

    @property
    def _follows(self) -> bool:
        return self.poll_seconds > 0 and any(s.ref.follows_alias for s in self._all_specs())

    def start_polling(self) -> None:
        """Follow aliases every ``poll_seconds``, and ask the registry about routes served from
        the cache straight away."""
        if self._thread is not None or not (self._follows or self._unconfirmed):
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll_loop, name="nbmlops-alias-poller", daemon=True
        )
        self._thread.start()

    def _poll_loop(self) -> None:
        delay = 0.0 if self._unconfirmed else self.poll_seconds
        while not self._stop.wait(delay):
            try:
                self.poll_once()
            except Exception:  # poll_once catches its own; this keeps the thread alive anyway
                log.exception("alias poller")
            if self._follows:
                delay = self.poll_seconds
                if self._unconfirmed:
                    delay = min(delay, CONFIRM_RETRY_SECONDS)
            elif self._unconfirmed:
                delay = CONFIRM_RETRY_SECONDS
            else:
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
