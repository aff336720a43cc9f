"""Built-in objects pass `kubernetes-validate --strict` for the targeted Kubernetes version; custom
resources (KEDA, RabbitMQ Cluster Operator, CloudNativePG) pass the JSON Schemas kept in deploy/k8s/schemas."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.deploy.manifests import (
    KUBERNETES_VERSION,
    OVERLAYS,
    SCHEMAS,
    Manifest,
    installed_script,
    is_custom,
    load_schema,
    of_kind,
    render,
    schema_path,
)


def kubernetes_validate(manifests: list[Manifest], directory: Path) -> subprocess.CompletedProcess[str]:
    path = directory / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(manifests))
    tool = installed_script("kubernetes-validate", "kubernetes-validate")
    return subprocess.run(
        [str(tool), "--strict", "--quiet", "--kubernetes-version", KUBERNETES_VERSION, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_built_in_objects_are_valid(tmp_path: Path) -> None:
    # Each distinct object once, whatever its namespace (which the schemas do not constrain): the overlays
    # share most of the base, and the tool is slow per object.
    distinct: dict[str, Manifest] = {}
    for overlay in OVERLAYS:
        for manifest in render(overlay):
            if not is_custom(manifest):
                key = {**manifest, "metadata": {k: v for k, v in manifest["metadata"].items() if k != "namespace"}}
                distinct[json.dumps(key, sort_keys=True)] = manifest
    result = kubernetes_validate(list(distinct.values()), tmp_path)
    # A kind without a schema is only a WARN for the tool: here it is a failure too.
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_kubernetes_validate_refuses_an_unknown_field(tmp_path: Path) -> None:
    deployment = copy.deepcopy(of_kind(render("prod"), "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"grpc": {"port": 50051}}
    result = kubernetes_validate([deployment], tmp_path)
    assert result.returncode != 0
    assert "livenesProbe" in result.stdout


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.json")), ids=lambda p: p.name)
def test_schemas_are_valid_json_schemas(path: Path) -> None:
    jsonschema.Draft202012Validator.check_schema(load_schema(path))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_match_their_schemas(overlay: str) -> None:
    custom = [m for m in render(overlay) if is_custom(m)]
    assert custom, "every overlay has KEDA objects"
    for manifest in custom:
        path = schema_path(manifest)
        assert path.is_file(), f"no schema for {manifest['apiVersion']} {manifest['kind']}: {path.name}"
        validator = jsonschema.Draft202012Validator(load_schema(path))
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(manifest)]
        assert errors == [], f"{manifest['kind']}/{manifest['metadata']['name']}: {errors}"


def test_scaled_object_schema_refuses_what_keda_would() -> None:
    scaled_object = copy.deepcopy(of_kind(render("prod"), "ScaledObject")[0])
    validator = jsonschema.Draft202012Validator(load_schema(schema_path(scaled_object)))
    assert validator.is_valid(scaled_object)
    trigger = scaled_object["spec"]["triggers"][0]["metadata"]
    for field, wrong in [("mode", "QueueSize"), ("value", 200), ("queueNmae", "send-sms")]:
        broken = copy.deepcopy(scaled_object)
        broken["spec"]["triggers"][0]["metadata"] = {**trigger, field: wrong}
        assert not validator.is_valid(broken), field
    amqp_rate = copy.deepcopy(scaled_object)
    amqp_rate["spec"]["triggers"][0]["metadata"] = {**trigger, "protocol": "amqp", "mode": "MessageRate"}
    assert not validator.is_valid(amqp_rate), "MessageRate needs the management API (http)"
