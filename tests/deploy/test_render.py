"""Every overlay renders with `kubectl kustomize`, and what it renders is safe to commit and to apply."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import OVERLAYS, of_kind, render


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_herald_workloads(overlay: str) -> None:
    manifests = render(overlay)
    deployments = {m["metadata"]["name"] for m in of_kind(manifests, "Deployment")}
    assert {"ingest", "gateway", "callbacks", "scheduler", "dispatcher-db", "dispatcher-send-sms"} <= deployments
    assert [m["metadata"]["name"] for m in of_kind(manifests, "Job")] == ["herald-db-upgrade"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_committed(overlay: str) -> None:
    # Secrets are referenced by name only; their values are created in the cluster (docs/operations.md).
    assert of_kind(render(overlay), "Secret") == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_lands_in_the_overlay_namespace(overlay: str) -> None:
    manifests = render(overlay)
    [namespace] = of_kind(manifests, "Namespace")
    name = namespace["metadata"]["name"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for m in manifests:
        if m["kind"] != "Namespace":
            assert m["metadata"].get("namespace") == name, f"{m['kind']}/{m['metadata']['name']}"
