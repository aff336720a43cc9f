"""Metrics: one facade for domain and service code, reported to Prometheus and, when switched on, statsd.

Callers say what they measure (`incr("api.accepted", type="sms")`, `@instrumented`), never where it goes.
Prometheus names are `herald_<name>` with the unit in the name (`_total`, `_seconds`); statsd names are
the name followed by the label values, under `{environment}.notifications.{app}.` so that staging and
live can share one statsd server (Notify's convention). Label values are never personal data.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from statsd import StatsClient

P = ParamSpec("P")
R = TypeVar("R")


class StatsdClient:
    """Notify's statsd wrapper: one switch turns sending on or off, so callers never check it."""

    def __init__(self) -> None:
        self._client: StatsClient | None = None
        # `{environment}.notifications` without the app: for names Notify gives no app of ours (`api.*`).
        self._root: StatsClient | None = None

    def configure(self, enabled: bool, host: str, port: int, prefix: str, root: str = "") -> None:
        if not enabled:
            self._client = self._root = None
            return
        if not host:
            raise ValueError("HERALD_STATSD_ENABLED is on but HERALD_STATSD_HOST is empty")
        self._client = StatsClient(host, port, prefix=prefix)
        self._root = StatsClient(host, port, prefix=root) if root else self._client

    def incr(self, name: str, value: int = 1, *, root: bool = False) -> None:
        client = self._root if root else self._client
        if client is not None:
            client.incr(name, value)

    def timing(self, name: str, seconds: float, *, root: bool = False) -> None:
        client = self._root if root else self._client
        if client is not None:
            client.timing(name, seconds * 1000)  # statsd timings are milliseconds

    def gauge(self, name: str, value: float) -> None:
        client = self._client
        if client is not None:
            client.gauge(name, value)


statsd_client = StatsdClient()

_lock = threading.Lock()
_counters: dict[tuple[str, tuple[str, ...]], Counter] = {}
_histograms: dict[tuple[str, tuple[str, ...]], Histogram] = {}
_gauges: dict[tuple[str, tuple[str, ...]], Gauge] = {}
# (name, label items) -> the labelled child and its statsd name: prometheus_client's labels() takes a lock
# and builds a key on every call, which the hot path (a call per send) should not pay. Label values come
# from fixed sets (types, key types, codes), so this holds no more than prometheus_client itself keeps.
_children: dict[tuple[object, ...], tuple[Counter | Histogram | Gauge, str]] = {}
Metric = TypeVar("Metric", Counter, Histogram, Gauge)


def _child(
    families: dict[tuple[str, tuple[str, ...]], Metric],
    make: Callable[[str, str, list[str]], Metric],
    suffix: str,
    name: str,
    labels: dict[str, str],
) -> tuple[Metric, str]:
    key = (make, name, *labels.items())
    found = _children.get(key)
    if found is None:
        family_key = (name, tuple(labels))
        with _lock:
            family = families.get(family_key) or make(_prom_name(name) + suffix, name, list(labels))
            families[family_key] = family
        found = _children[key] = (family.labels(**labels) if labels else family, _statsd_name(name, labels))
    return found  # type: ignore[return-value]  # keyed by `make`, so of its type


_FUNCTION_SECONDS = Histogram(
    "herald_function_duration_seconds",
    "Calls of @instrumented functions (database functions, tasks, queue handlers), by outcome",
    ["function", "outcome"],
)


def configure(
    environment: str,
    app: str,
    statsd_host: str,
    statsd_port: int,
    http_port: int,
    *,
    statsd_enabled: bool = False,
) -> None:
    """Statsd sends only when `statsd_enabled` (HERALD_STATSD_ENABLED); `http_port` 0 serves no /metrics."""
    root = f"{environment}.notifications"
    statsd_client.configure(statsd_enabled, statsd_host, statsd_port, f"{root}.{app}", root)
    if http_port:
        start_http_server(http_port)


def _prom_name(name: str) -> str:
    return "herald_" + name.replace(".", "_").replace("-", "_")


def _statsd_name(name: str, labels: dict[str, str]) -> str:
    return ".".join([name, *labels.values()]) if labels else name


def incr(name: str, value: int = 1, *, statsd_root: bool = False, **labels: str) -> None:
    """Prometheus `herald_<name>_total`, statsd counter `<name>.<label values>` (under
    `{environment}.notifications.` rather than the app's prefix with `statsd_root`)."""
    counter, statsd_name = _child(_counters, Counter, "_total", name, labels)
    counter.inc(value)
    statsd_client.incr(statsd_name, value, root=statsd_root)


def observe(name: str, seconds: float, *, statsd_root: bool = False, **labels: str) -> None:
    """Prometheus histogram `herald_<name>_seconds`, statsd timer `<name>.<label values>` in ms
    (`statsd_root` as for `incr`)."""
    hist, statsd_name = _child(_histograms, Histogram, "_seconds", name, labels)
    hist.observe(seconds)
    statsd_client.timing(statsd_name, seconds, root=statsd_root)


def gauge(name: str, value: float, **labels: str) -> None:
    """Prometheus gauge `herald_<name>` (a count, so no unit suffix), statsd gauge `<name>.<label values>`."""
    g, statsd_name = _child(_gauges, Gauge, "", name, labels)
    g.set(value)
    statsd_client.gauge(statsd_name, value)


@contextmanager
def timed(name: str, **labels: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        observe(name, time.perf_counter() - start, statsd_root=False, **labels)


# Notify's statsd namespaces for database functions and tasks, so that Herald's names read as Notify's
# did (`dao.notifications.insert_batch`, `tasks.delete_notifications_older_than_retention`); elsewhere
# the module path without its top package.
_NAMESPACES = (("herald.db", "dao"), ("herald.scheduling.tasks", "tasks"), ("herald", ""), ("services", ""))


def stat_name(func: Callable[..., object]) -> str:
    """The name @instrumented reports `func` under: its namespace or module, then its qualified name."""
    if "<locals>" in func.__qualname__:
        raise ValueError(f"{func.__qualname__}: only module-level functions and methods get a stable name")
    module = func.__module__
    for package, namespace in _NAMESPACES:
        if module == package or module.startswith(package + "."):
            module = (namespace + module[len(package) :]).lstrip(".")
            break
    return f"{module}.{func.__qualname__}" if module else func.__qualname__


def instrumented(func: Callable[P, R]) -> Callable[P, R]:
    """Counts and times every call of `func` (the seed's statsd decorator), under `stat_name(func)`.

    A call that returns: statsd counter and timer `<name>`. A call that raises: counter and timer
    `<name>.failure`. Prometheus: `herald_function_duration_seconds{function="<name>",outcome="ok|failure"}`.
    """
    if inspect.isgeneratorfunction(func) or inspect.iscoroutinefunction(func):
        raise TypeError(f"{func.__qualname__}: a call would only time creating the generator or coroutine")
    name = stat_name(func)
    failure = name + ".failure"
    # Bound once here: a call only looks up nothing.
    ok_seconds = _FUNCTION_SECONDS.labels(name, "ok")
    failed_seconds = _FUNCTION_SECONDS.labels(name, "failure")

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        start = time.perf_counter()
        try:
            result = func(*args, **kwargs)
        except Exception:
            elapsed = time.perf_counter() - start
            failed_seconds.observe(elapsed)
            statsd_client.incr(failure)
            statsd_client.timing(failure, elapsed)
            raise
        elapsed = time.perf_counter() - start
        ok_seconds.observe(elapsed)
        statsd_client.incr(name)
        statsd_client.timing(name, elapsed)
        return result

    return wrapper
