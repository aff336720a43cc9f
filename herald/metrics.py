"""Metrics: one facade for domain and service code, reported to Prometheus and, when configured, statsd.

Label values are never personal data: notification type, provider, status, queue, RPC method, code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import statsd
from prometheus_client import Counter, Histogram, start_http_server

_lock = threading.Lock()
_counters: dict[tuple[str, tuple[str, ...]], Counter] = {}
_histograms: dict[tuple[str, tuple[str, ...]], Histogram] = {}
_statsd: statsd.StatsClient | None = None


def configure(environment: str, app: str, statsd_host: str, statsd_port: int, http_port: int) -> None:
    """Statsd names are prefixed `{environment}.notifications.{app}.` so environments share one server."""
    global _statsd
    if statsd_host:
        _statsd = statsd.StatsClient(statsd_host, statsd_port, prefix=f"{environment}.notifications.{app}")
    if http_port:
        start_http_server(http_port)


def _prom_name(name: str) -> str:
    return "herald_" + name.replace(".", "_").replace("-", "_")


def _statsd_name(name: str, labels: dict[str, str]) -> str:
    return ".".join([name, *labels.values()])


def incr(name: str, value: int = 1, **labels: str) -> None:
    key = (name, tuple(labels))
    counter = _counters.get(key)
    if counter is None:
        with _lock:
            counter = _counters.get(key) or Counter(_prom_name(name) + "_total", name, list(labels))
            _counters[key] = counter
    (counter.labels(**labels) if labels else counter).inc(value)
    if _statsd is not None:
        _statsd.incr(_statsd_name(name, labels), value)


def observe(name: str, seconds: float, **labels: str) -> None:
    key = (name, tuple(labels))
    hist = _histograms.get(key)
    if hist is None:
        with _lock:
            hist = _histograms.get(key) or Histogram(_prom_name(name) + "_seconds", name, list(labels))
            _histograms[key] = hist
    (hist.labels(**labels) if labels else hist).observe(seconds)
    if _statsd is not None:
        _statsd.timing(_statsd_name(name, labels), seconds * 1000)


@contextmanager
def timed(name: str, **labels: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        observe(name, time.perf_counter() - start, **labels)
