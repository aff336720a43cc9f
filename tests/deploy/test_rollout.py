"""deploy/k8s/rollout.sh runs the migration Job to completion before it applies any Deployment. It is run
here against a stand-in kubectl that records each call (and renders with the real one)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.deploy.manifests import K8S, ROLLOUT_SCRIPT, kubectl

FAKE_KUBECTL = """#!/usr/bin/env bash
echo "$*" >> "$KUBECTL_LOG"
if [[ $1 == kustomize ]]; then exec "$REAL_KUBECTL" "$@"; fi
if [[ " $* " == *" wait "* ]]; then exit "$WAIT_STATUS"; fi
"""


def rollout(overlay: str, tmp_path: Path, *, wait_status: int = 0) -> tuple[int, list[str]]:
    fake = tmp_path / "kubectl"
    fake.write_text(FAKE_KUBECTL)
    fake.chmod(0o755)
    log = tmp_path / "calls"
    env = {
        **os.environ,
        "KUBECTL": str(fake),
        "KUBECTL_LOG": str(log),
        "REAL_KUBECTL": str(kubectl()),
        "WAIT_STATUS": str(wait_status),
    }
    result = subprocess.run(
        ["bash", str(ROLLOUT_SCRIPT), str(K8S / "overlays" / overlay)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    calls = [line for line in log.read_text().splitlines() if not line.startswith("kustomize")]
    return result.returncode, calls


@pytest.mark.parametrize(("overlay", "namespace"), [("dev", "herald-dev"), ("prod-clustered", "herald")])
def test_migration_completes_before_anything_else_is_applied(overlay: str, namespace: str, tmp_path: Path) -> None:
    status, calls = rollout(overlay, tmp_path)
    assert status == 0
    target = str(K8S / "overlays" / overlay)
    assert calls == [
        f"--namespace {namespace} delete job herald-db-upgrade --ignore-not-found --wait=true",
        f"apply --kustomize {target} --selector herald.io/rollout-step=before-services",
        f"--namespace {namespace} wait --for=condition=complete job/herald-db-upgrade --timeout=960s",
        f"apply --kustomize {target} --selector herald.io/rollout-step!=before-services",
        f"--namespace {namespace} rollout status deployment --selector app.kubernetes.io/part-of=herald --timeout=600s",
    ]


def test_a_failed_migration_applies_no_service(tmp_path: Path) -> None:
    status, calls = rollout("prod", tmp_path, wait_status=1)
    assert status != 0
    assert calls[-1].startswith("--namespace herald wait ")
