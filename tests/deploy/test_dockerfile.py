"""The Dockerfile cannot be built here (no Docker): these checks read it for what the manifests rely on:
multi-stage, slim, non-root with the uid the pods run as, nothing written outside /tmp, the `herald`
entry point, and every port the pods declare."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field

import pytest

from tests.deploy.manifests import OVERLAYS, ROOT, render, workloads

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arguments for k, arguments in self.instructions if k == keyword]


def parse() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "FROM":
            image, _, name = arguments.partition(" AS ")
            for arg, value in args.items():
                image = image.replace("${" + arg + "}", value)
            stages.append(Stage(image, name.strip()))
        elif not stages and keyword == "ARG":
            arg, _, default = arguments.partition("=")
            args[arg] = default
        elif stages:
            stages[-1].instructions.append((keyword, arguments))
    return args, stages


def env_of(stage: Stage) -> dict[str, str]:
    return dict(pair.split("=", 1) for env in stage.all("ENV") for pair in env.split())


def test_multi_stage_from_a_slim_python_of_the_projects_version() -> None:
    _, stages = parse()
    assert len(stages) >= 2
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = requires.removeprefix(">=")
    for stage in stages:
        assert re.fullmatch(rf"python:{re.escape(minimum)}-slim(-\w+)?", stage.base), stage.base
    runtime = stages[-1]
    # The runtime stage takes the installed virtualenv only: no sources, no build tools.
    copies = runtime.all("COPY")
    assert copies and all(c.startswith(f"--from={stages[0].name} ") for c in copies), copies
    assert not runtime.all("RUN") or all("pip" not in r for r in runtime.all("RUN"))


def test_runs_as_the_non_root_user_the_pods_require() -> None:
    _, stages = parse()
    [user] = stages[-1].all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    for overlay in OVERLAYS:
        for workload in workloads(render(overlay)):
            assert workload.pod["securityContext"]["runAsUser"] == int(uid), (overlay, workload.name)


def test_writes_nothing_outside_tmp_at_run_time() -> None:
    _, stages = parse()
    build, runtime = stages[0], stages[-1]
    env = env_of(runtime)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp"
    # Bytecode is compiled at build time: the interpreter cannot write __pycache__ later.
    assert any("compileall" in run for run in build.all("RUN"))


def test_the_role_is_the_command() -> None:
    _, stages = parse()
    [entrypoint] = stages[-1].all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["herald"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["herald"] == "herald.cli:main"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_exposes_every_port_the_pods_declare(overlay: str) -> None:
    _, stages = parse()
    exposed = {int(port) for ports in stages[-1].all("EXPOSE") for port in ports.split()}
    for workload in workloads(render(overlay)):
        if workload.role != "provider-sim":  # a development stand-in, not part of the product
            assert set(workload.container_ports.values()) <= exposed, workload.name


def test_build_context_is_only_what_the_build_copies() -> None:
    _, stages = parse()
    sources = {c.split()[0].rstrip("/") for c in stages[0].all("COPY") if not c.startswith("--from")}
    lines = [line for line in DOCKERIGNORE.read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*", "everything is excluded unless listed"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == sources
