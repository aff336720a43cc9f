"""The metrics facade: names inferred by @instrumented, Prometheus and statsd names, the statsd switch,
and the monitoring examples in deploy/monitoring checked against the names Herald really exports."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from herald import metrics
from herald.grpcsrv import rpc_metrics  # noqa: F401  (registers the grpc_* families)

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
PREFIX = "test.notifications.unit."


@pytest.fixture
def statsd_lines() -> Iterator[Callable[[int], list[str]]]:
    """Statsd switched on towards a real UDP socket; the callable reads `n` packets from it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2.0)
        metrics.configure("test", "unit", "127.0.0.1", sock.getsockname()[1], 0, statsd_enabled=True)

        def read(n: int) -> list[str]:
            return [sock.recv(65535).decode() for _ in range(n)]

        yield read
    metrics.configure("test", "unit", "", 8125, 0, statsd_enabled=False)


def _named(module: str, qualname: str) -> Callable[[], None]:
    def func() -> None:
        return None

    func.__module__, func.__qualname__ = module, qualname
    return func


@pytest.mark.parametrize(
    ("module", "qualname", "name"),
    [
        ("herald.db.notifications", "insert_batch", "dao.notifications.insert_batch"),
        (
            "herald.scheduling.tasks",
            "delete_notifications_older_than_retention",
            "tasks.delete_notifications_older_than_retention",
        ),
        ("herald.service_layer.delivery", "Deliverer.hand_off", "service_layer.delivery.Deliverer.hand_off"),
        ("services.dispatcher.app", "handle", "dispatcher.app.handle"),
        ("herald.dbx", "f", "dbx.f"),  # a package prefix, not a string prefix
    ],
)
def test_stat_name_is_inferred_from_module_and_function(module: str, qualname: str, name: str) -> None:
    assert metrics.stat_name(_named(module, qualname)) == name


def test_functions_without_a_stable_name_or_a_single_call_are_refused() -> None:
    def local() -> None:
        return None

    def generator() -> Iterator[int]:
        yield 1

    with pytest.raises(ValueError, match="module-level"):
        metrics.instrumented(local)
    generator.__qualname__ = "generator"
    with pytest.raises(TypeError, match="generator"):
        metrics.instrumented(generator)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_instrumented_counts_and_times_each_call_and_its_failures(statsd_lines: Callable[[int], list[str]]) -> None:
    def insert_batch(rows: list[int]) -> int:
        if not rows:
            raise ValueError("nothing to insert")
        return len(rows)

    insert_batch.__module__, insert_batch.__qualname__ = "herald.db.notifications", "insert_batch"
    instrumented = metrics.instrumented(insert_batch)
    function = "dao.notifications.insert_batch"
    ok_before = _sample("herald_function_duration_seconds_count", function=function, outcome="ok")
    failed_before = _sample("herald_function_duration_seconds_count", function=function, outcome="failure")

    assert instrumented([1, 2]) == 2
    with pytest.raises(ValueError, match="nothing"):
        instrumented([])

    lines = statsd_lines(4)
    assert lines[0] == f"{PREFIX}{function}:1|c"
    assert re.fullmatch(rf"{re.escape(PREFIX + function)}:\d+\.\d+\|ms", lines[1])
    assert lines[2] == f"{PREFIX}{function}.failure:1|c"
    assert re.fullmatch(rf"{re.escape(PREFIX + function)}\.failure:\d+\.\d+\|ms", lines[3])
    assert _sample("herald_function_duration_seconds_count", function=function, outcome="ok") - ok_before == 1
    assert _sample("herald_function_duration_seconds_count", function=function, outcome="failure") - failed_before == 1
    assert instrumented.__name__ == "insert_batch"  # functools.wraps: logs and tracebacks keep the name


def test_facade_names_in_prometheus_and_statsd(statsd_lines: Callable[[int], list[str]]) -> None:
    before = _sample("herald_unit_test_sent_total", type="sms")
    metrics.incr("unit_test.sent", type="sms")
    metrics.observe("unit_test.wait", 0.25, queue="db-sms")
    metrics.gauge("unit_test.depth", 7, queue="db-sms")
    with metrics.timed("unit_test.step"):
        time.sleep(0.001)

    lines = statsd_lines(4)
    assert lines[:3] == [
        f"{PREFIX}unit_test.sent.sms:1|c",
        f"{PREFIX}unit_test.wait.db-sms:250.000000|ms",
        f"{PREFIX}unit_test.depth.db-sms:7|g",
    ]
    assert lines[3].startswith(f"{PREFIX}unit_test.step:")
    assert _sample("herald_unit_test_sent_total", type="sms") - before == 1
    assert _sample("herald_unit_test_wait_seconds_sum", queue="db-sms") >= 0.25
    assert _sample("herald_unit_test_depth", queue="db-sms") == 7
    assert _sample("herald_unit_test_step_seconds_count") >= 1


def test_the_switch_needs_a_host() -> None:
    with pytest.raises(ValueError, match="HERALD_STATSD_HOST"):
        metrics.configure("test", "unit", "", 8125, 0, statsd_enabled=True)


# -- deploy/monitoring ---------------------------------------------------------------------------

# PromQL words that are not metric names: functions, aggregations, operators, modifiers.
PROMQL_WORDS = {"sum", "max", "rate", "increase", "histogram_quantile", "by", "unless", "or", "and", "offset"}


def _metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)  # matchers, ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\boffset\s+\w+", "", expr)
    return set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr)) - PROMQL_WORDS


def _exported_names() -> set[str]:
    """Every series name Herald exports, after using the facade exactly as the dispatcher and the
    scheduler do (their metrics are created on first use)."""
    metrics.gauge("notifications_stuck", 0, status="created")
    metrics.incr("dead_lettered", 0, queue="db-sms", reason="undecodable")
    metrics.incr("provider_handoffs", 0, provider="mmg", outcome="ok")
    metrics.observe("handoff_delay", 0.1)
    metrics.observe("queue_wait", 0.1, queue="db-sms")
    metrics.incr("jobs.stalled", 0)
    metrics.incr("jobs.rows_queued", 0, type="sms")
    metrics.incr("inbound.received", 0, provider="mmg")
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    return {family.name + suffix for family in REGISTRY.collect() for suffix in suffixes.get(family.type, [])}


def _rule_expressions() -> list[str]:
    rules = yaml.safe_load((MONITORING / "herald-alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads((MONITORING / "herald-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_alert_rules_and_dashboard_read_only_exported_metrics() -> None:
    exported = _exported_names()
    rule_names = set().union(*map(_metric_names, _rule_expressions()))
    dashboard_names = set().union(*map(_metric_names, _dashboard_expressions()))
    assert "herald_notifications_stuck" in rule_names and "grpc_server_handled_total" in rule_names
    assert rule_names - exported == set()
    assert dashboard_names - exported == set()


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    checked = _promtool("check", "rules", str(MONITORING / "herald-alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", str(MONITORING / "herald-alerts.test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    # Grafana fills $__rate_interval in; as recording rules promtool parses each query.
    rules: dict[str, Any] = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"herald:dashboard_query_{n}", "expr": expr.replace("$__rate_interval", "5m")}
                    for n, expr in enumerate(_dashboard_expressions())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = _promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
