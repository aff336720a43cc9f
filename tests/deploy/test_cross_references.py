"""The manifests agree with Herald's code: queue names with the topology, ports with what each process
listens on, settings with herald/settings.py, and objects with the objects they name."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from herald.queues.topology import ALL_QUEUES, INBOUND_QUEUE, QUEUE_TYPES, WORK_QUEUES
from herald.settings import Settings
from tests.deploy.manifests import (
    OVERLAYS,
    ROLLOUT_STEP_LABEL,
    Manifest,
    Workload,
    config_maps,
    named,
    of_kind,
    render,
    selects,
    workloads,
)

SETTINGS = {f"HERALD_{f.name.upper()}": f for f in fields(Settings)}

# The settings each role listens on (herald/bootstrap.py and herald/cli.py); every long-running role also
# serves Prometheus on HERALD_METRICS_PORT.
LISTENERS = {
    "ingest": ("HERALD_INGEST_ADDRESS",),
    "callbacks": ("HERALD_CALLBACKS_ADDRESS",),
    "scheduler": ("HERALD_SCHEDULER_ADDRESS",),
    "dispatcher": ("HERALD_DISPATCHER_ADDRESS",),
    "gateway": ("HERALD_GATEWAY_ADDRESS",),
}

# Seconds each role may take to stop after SIGTERM: the gRPC servers' stop grace (herald/bootstrap.py),
# the scheduler's SHUTDOWN_GRACE (services/scheduler/app.py), a dispatcher's batch join plus its health
# server's grace (services/dispatcher/app.py).
SHUTDOWN_SECONDS = {"ingest": 10, "callbacks": 10, "gateway": 10, "scheduler": 20, "dispatcher": 21}


def services(overlay: str) -> list[Workload]:
    return [w for w in workloads(render(overlay)) if w.kind == "Deployment" and w.role in LISTENERS]


def listening_ports(workload: Workload, overlay: str) -> set[int]:
    """The ports the container's process binds, from the settings it will read (or their defaults)."""
    env = workload.env(config_maps(render(overlay)))
    if workload.role == "provider-sim":
        return {int(workload.flag("--port"))}
    ports = set()
    for name in (*LISTENERS[workload.role], "HERALD_METRICS_PORT"):
        field = SETTINGS.get(name)
        value = env.get(name, "" if field is None else str(field.default))
        assert value not in ("", "0"), f"{workload.name}: {name} is not set"
        if name == "HERALD_METRICS_PORT":
            ports.add(int(value))
            continue
        host, _, port = value.rpartition(":")
        assert host == "0.0.0.0", f"{workload.name}: {name}={value} is unreachable from outside the pod"
        ports.add(int(port))
    return ports


def probe_port(probe: Manifest, container_ports: dict[str, int]) -> int:
    [action] = [v for k, v in probe.items() if k in ("grpc", "httpGet", "tcpSocket")]
    port = action["port"]
    return container_ports[port] if isinstance(port, str) else int(port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaled_object_queues_exist_and_are_the_ones_the_dispatcher_consumes(overlay: str) -> None:
    manifests = render(overlay)
    for scaled_object in of_kind(manifests, "ScaledObject"):
        target = Workload(named(manifests, "Deployment", scaled_object["spec"]["scaleTargetRef"]["name"]))
        queues = [t["metadata"]["queueName"] for t in scaled_object["spec"]["triggers"] if t["type"] == "rabbitmq"]
        unknown = set(queues) - set(ALL_QUEUES)
        assert not unknown, f"{scaled_object['metadata']['name']}: {unknown} not in herald/queues/topology.py"
        assert sorted(queues) == sorted(target.flag("--queues").split(",")), target.name
        for trigger in scaled_object["spec"]["triggers"]:
            auth = trigger["authenticationRef"]["name"]
            named(manifests, "TriggerAuthentication", auth)
        assert scaled_object["spec"]["minReplicaCount"] <= scaled_object["spec"]["maxReplicaCount"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_dispatcher_is_scaled_by_keda_and_each_queue_has_one_group(overlay: str) -> None:
    manifests = render(overlay)
    dispatchers = [w for w in workloads(manifests) if w.args[:1] == ["dispatcher"]]
    scaled = {s["spec"]["scaleTargetRef"]["name"] for s in of_kind(manifests, "ScaledObject")}
    assert {d.name for d in dispatchers} == scaled
    consumed = [q for d in dispatchers for q in d.flag("--queues").split(",")]
    assert len(consumed) == len(set(consumed)), "a queue consumed by two dispatcher groups"
    assert "dead-letter" not in consumed, "dead-letter is for people to inspect, not for a dispatcher"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_work_queue_is_consumed_by_a_deployment(overlay: str) -> None:
    # A queue nobody consumes stores work that never moves (a job's rows, received texts).
    consumed = {
        queue
        for w in workloads(render(overlay))
        if w.kind == "Deployment" and w.role == "dispatcher"
        for queue in w.flag("--queues").split(",")
    }
    missing = sorted({*WORK_QUEUES, INBOUND_QUEUE} - consumed)
    assert missing == [], f"no Deployment consumes {missing}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_are_the_ones_the_processes_listen_on(overlay: str) -> None:
    manifests = render(overlay)
    for workload in workloads(manifests):
        if workload.kind == "Job":
            assert not workload.container_ports, f"{workload.name} serves nothing"
            continue
        listening = listening_ports(workload, overlay)
        ports = workload.container_ports
        assert set(ports.values()) == listening, f"{workload.name}: containerPorts {ports} vs {listening}"
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind in workload.container:
                port = probe_port(workload.container[kind], ports)
                assert port in listening - {ports.get("metrics")}, f"{workload.name} {kind} on {port}"
        assert "readinessProbe" in workload.container and "livenessProbe" in workload.container, workload.name
        if workload.role in ("ingest", "callbacks", "scheduler", "dispatcher"):
            assert "grpc" in workload.container["readinessProbe"], f"{workload.name}: native gRPC probe"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_network_policies_name_ports_their_pods_have(overlay: str) -> None:
    manifests = render(overlay)
    pods = [w for w in workloads(manifests) if w.kind == "Deployment"]
    for service in of_kind(manifests, "Service"):
        selected = [w for w in pods if selects({"matchLabels": service["spec"]["selector"]}, w.labels)]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            for workload in selected:
                assert port["targetPort"] in workload.container_ports, (service["metadata"]["name"], port)
    for policy in of_kind(manifests, "NetworkPolicy"):
        selected = [w for w in pods if selects(policy["spec"]["podSelector"], w.labels)]
        assert selected, f"NetworkPolicy {policy['metadata']['name']} selects no pod"
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                assert any(port["port"] in w.container_ports for w in selected), (policy["metadata"]["name"], port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_front_doors_accept_traffic_from_outside_the_namespace(overlay: str) -> None:
    manifests = render(overlay)
    pods = [w for w in workloads(manifests) if w.kind == "Deployment"]
    open_to_all: set[tuple[str, str]] = set()
    for policy in of_kind(manifests, "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            sources = rule.get("from", [])
            if sources and all("podSelector" in s and "namespaceSelector" not in s for s in sources):
                continue  # this namespace only
            if sources and all("namespaceSelector" in s for s in sources):
                assert [p["port"] for p in rule["ports"]] == ["metrics"], policy["metadata"]["name"]
                continue  # Prometheus
            for workload in pods:
                if selects(policy["spec"]["podSelector"], workload.labels):
                    open_to_all.update((workload.name, p["port"]) for p in rule["ports"])
    assert open_to_all == {("ingest", "grpc"), ("gateway", "http")}
    [deny] = [p for p in of_kind(manifests, "NetworkPolicy") if "ingress" not in p["spec"]]
    assert all(selects(deny["spec"]["podSelector"], w.labels) for w in pods), "default deny covers every pod"


def admits(manifests: tuple[Manifest, ...], source: Workload, target: Workload, port: str) -> bool:
    """Some NetworkPolicy lets `source`'s pods (or anyone) reach `target`'s pods on `port`."""
    for policy in of_kind(manifests, "NetworkPolicy"):
        if not selects(policy["spec"]["podSelector"], target.labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from", [])
            from_source = not peers or any(
                "namespaceSelector" not in p and selects(p.get("podSelector", {}), source.labels) for p in peers
            )
            if from_source and any(p["port"] == port for p in rule.get("ports", [{"port": port}])):
                return True
    return False


def test_dev_simulator_posts_receipts_to_the_gateway_which_trusts_its_certificate() -> None:
    manifests = render("dev")
    settings = config_maps(manifests)
    simulator = Workload(named(manifests, "Deployment", "provider-sim"))
    gateway = Workload(named(manifests, "Deployment", "gateway"))
    # The URLs the simulator signs are http://<--host>:<--port>: a name the gateway resolves to it.
    host, port = simulator.flag("--host"), int(simulator.flag("--port"))
    assert simulator.pod.get("hostname") == host, "the simulator binds under its own hostname"
    sim_service = named(manifests, "Service", host)
    assert selects({"matchLabels": sim_service["spec"]["selector"]}, simulator.labels)
    assert port in [p["port"] for p in sim_service["spec"]["ports"]]
    assert gateway.env(settings)["HERALD_SNS_TRUSTED_URL_PREFIX"] == f"http://{host}:{port}/"

    receipts_url = simulator.env(settings)["HERALD_SIM_RECEIPTS_URL"]
    gateway_service = named(manifests, "Service", "gateway")
    assert selects({"matchLabels": gateway_service["spec"]["selector"]}, gateway.labels)
    [gateway_port] = gateway_service["spec"]["ports"]
    assert receipts_url == f"http://gateway:{gateway_port['port']}"

    assert admits(manifests, simulator, gateway, gateway_port["targetPort"]), "simulator -> gateway webhooks"
    assert admits(manifests, gateway, simulator, "http"), "gateway -> simulator: certificate fetch"


@pytest.mark.parametrize("overlay", ["prod", "prod-clustered"])
def test_production_trusts_only_amazon_and_runs_no_simulator(overlay: str) -> None:
    manifests = render(overlay)
    assert [w.name for w in workloads(manifests) if w.role == "provider-sim"] == []
    for workload in workloads(manifests):
        env = workload.env(config_maps(manifests))
        for name in ("HERALD_SNS_TRUSTED_URL_PREFIX", "HERALD_SIM_RECEIPTS_URL"):
            assert env.get(name, "") == "", f"{workload.name}: {name} is for development only"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_deployment_switches_the_sending_limits_off(overlay: str) -> None:
    # HERALD_LIMITS_ENABLED=false is for benchmarks and debugging only (docs/operations.md).
    manifests = render(overlay)
    for workload in workloads(manifests):
        value = workload.env(config_maps(manifests)).get("HERALD_LIMITS_ENABLED", "true")
        assert value.lower() in ("true", "1", "yes"), f"{workload.name}: HERALD_LIMITS_ENABLED={value}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_map_keys_are_real_settings(overlay: str) -> None:
    for name, data in config_maps(render(overlay)).items():
        unknown = [key for key in data if key not in SETTINGS]
        assert unknown == [], f"ConfigMap {name}: {unknown} are not fields of herald.settings.Settings"
        for key, value in data.items():
            default = SETTINGS[key].default
            if isinstance(default, bool):
                assert value.lower() in ("true", "false", "1", "0", "yes", "no"), key
            elif isinstance(default, (int, float)):
                float(value)  # Settings.from_env would fail on it at start-up
        if "HERALD_QUEUE_TYPE" in data:
            assert data["HERALD_QUEUE_TYPE"] in QUEUE_TYPES


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_herald_variables_in_pods_are_real_settings(overlay: str) -> None:
    for workload in workloads(render(overlay)):
        names = [e["name"] for e in workload.container.get("env", [])]
        unknown = [n for n in names if n.startswith("HERALD_") and n not in SETTINGS]
        assert unknown == [], f"{workload.name}: {unknown}"
        for entry in workload.container.get("env", []):
            for reference in re.findall(r"\$\((\w+)\)", str(entry.get("value", ""))):
                # Kubernetes expands $(VAR) only from entries listed before this one.
                assert reference in names[: names.index(entry["name"])], (workload.name, entry["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down_and_sized(overlay: str) -> None:
    for workload in workloads(render(overlay)):
        pod, container = workload.pod, workload.container
        assert pod["automountServiceAccountToken"] is False, workload.name
        assert pod["securityContext"]["runAsNonRoot"] is True, workload.name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", workload.name
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, workload.name
        assert security["allowPrivilegeEscalation"] is False, workload.name
        assert security["capabilities"]["drop"] == ["ALL"], workload.name
        # The only writable path: HOME and TMPDIR point there (Dockerfile).
        [mount] = container["volumeMounts"]
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert mount["mountPath"] == "/tmp" and "emptyDir" in volume, workload.name
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{workload.name} {bound}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_the_graceful_shutdown(overlay: str) -> None:
    for workload in services(overlay):
        pre_stop = workload.container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        needed = pre_stop + SHUTDOWN_SECONDS[workload.role]
        grace = workload.pod["terminationGracePeriodSeconds"]
        assert grace >= needed + 5, f"{workload.name}: {grace}s for {needed}s of shutdown"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_a_disruption_budget_and_front_doors_an_hpa(overlay: str) -> None:
    manifests = render(overlay)
    budgets = of_kind(manifests, "PodDisruptionBudget")
    for workload in services(overlay):
        assert any(selects(b["spec"]["selector"], workload.labels) for b in budgets), workload.name
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(manifests, "HorizontalPodAutoscaler")}
    assert hpas == {"ingest", "gateway"}
    for name in hpas:
        # The autoscaler owns the replica count: an apply must not reset it.
        assert "replicas" not in named(manifests, "Deployment", name)["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migration_runs_before_the_services(overlay: str) -> None:
    manifests = render(overlay)
    job = Workload(named(manifests, "Job", "herald-db-upgrade"))
    assert job.args == ["db", "upgrade"]
    before = {
        (m["kind"], m["metadata"]["name"])
        for m in manifests
        if m["metadata"].get("labels", {}).get(ROLLOUT_STEP_LABEL) == "before-services"
    }
    needed = {
        ("Job", job.name),
        ("ServiceAccount", job.pod["serviceAccountName"]),
        ("Namespace", job.manifest["metadata"]["namespace"]),
    }
    needed |= {("ConfigMap", s["configMapRef"]["name"]) for s in job.container["envFrom"] if "configMapRef" in s}
    assert needed <= before
    assert not any(kind in ("Deployment", "ScaledObject", "HorizontalPodAutoscaler") for kind, _ in before)
