"""A PostgreSQL and a RabbitMQ node of the harness's own, in a temporary directory, so that it may stop them.

Neither touches the machine's own servers: each gets free ports, its own data directory, and (RabbitMQ)
its own node name, Erlang cookie and configuration files.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from herald.netports import free_port as free_port  # chaos's modules take it from here

T = TypeVar("T")


class InfraError(RuntimeError):
    pass


def wait_for(check: Callable[[], T | None], timeout: float, interval: float = 0.2, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise InfraError(f"{what} not met within {timeout:.0f}s")
        time.sleep(interval)


def _postgres_bin() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        found = shutil.which("pg_ctl")
        if found is None:
            raise InfraError("no pg_ctl under /usr/lib/postgresql/*/bin or on PATH")
        return Path(found).parent
    return Path(candidates[-1]).parent


class OwnPostgres:
    """initdb + pg_ctl in `workdir`. PostgreSQL refuses to run as root, so as root it runs as `postgres`."""

    def __init__(self, workdir: Path) -> None:
        self._dir = workdir / "postgres"
        self._data = self._dir / "data"
        self._bin = _postgres_bin()
        self.port = free_port()
        self._user = "postgres" if os.geteuid() == 0 else None

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(args, capture_output=True, timeout=timeout, user=self._user, cwd=self._dir)
        if result.returncode != 0:
            raise InfraError(f"{Path(args[0]).name} failed: {result.stderr.decode(errors='replace')[-500:]}")

    def init(self) -> None:
        self._dir.mkdir(parents=True)
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self._dir, entry.pw_uid, entry.pw_gid)
        self._run(str(self._bin / "initdb"), "-D", str(self._data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")  # fmt: skip
        self.start()

    def start(self) -> None:
        # fsync off: the scenarios stop PostgreSQL cleanly (fast shutdown), never the machine under it.
        options = f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        self._run(str(self._bin / "pg_ctl"), "-D", str(self._data), "-l", str(self._dir / "server.log"), "-w",
                  "-o", options, "start")  # fmt: skip

    def stop(self) -> None:
        self._run(str(self._bin / "pg_ctl"), "-D", str(self._data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        if (self._data / "postmaster.pid").exists():
            with contextlib.suppress(InfraError, subprocess.TimeoutExpired):
                self.stop()


def _rabbitmq_script(name: str) -> str:
    # The Debian wrappers in /usr/sbin switch to the rabbitmq user, whose cookie and log paths are the
    # machine node's; the scripts under /usr/lib/rabbitmq/bin run as we are, with our HOME's cookie.
    direct = Path("/usr/lib/rabbitmq/bin") / name
    if direct.exists():
        return str(direct)
    found = shutil.which(name)
    if found is None:
        raise InfraError(f"{name} not found")
    return found


class OwnRabbitMQ:
    """A RabbitMQ node named herald-chaos-<pid>@localhost with its own ports, mnesia, logs and config."""

    def __init__(self, workdir: Path) -> None:
        self._dir = workdir / "rabbitmq"
        self.port = free_port()
        self.node = f"herald-chaos-{os.getpid()}@localhost"
        self._process: subprocess.Popen[bytes] | None = None
        self._env = {
            **os.environ,
            "HOME": str(self._dir),  # the Erlang cookie is made and read there
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self._dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self._dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self._dir / "enabled_plugins"),
            # The machine's rabbitmq-env.conf and rabbitmq.conf name its own node and listener.
            "RABBITMQ_CONF_ENV_FILE": str(self._dir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self._dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self._dir / "advanced.config"),
            "RABBITMQ_PID_FILE": str(self._dir / "pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def init(self) -> None:
        self._dir.mkdir(parents=True)
        (self._dir / "enabled_plugins").write_text("")
        (self._dir / "rabbitmq-env.conf").write_text("")
        (self._dir / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        self.start()

    def start(self, timeout: float = 120) -> None:
        log = (self._dir / "server.out").open("ab")
        self._process = subprocess.Popen(
            [_rabbitmq_script("rabbitmq-server")], env=self._env, stdout=log, stderr=subprocess.STDOUT,
            cwd=self._dir, start_new_session=True,
        )  # fmt: skip
        # await_startup fails at once while the node has not registered with epmd yet: ask again.
        wait_for(lambda: self._ctl("await_startup", "--timeout", "30", check=False), timeout, 0.5,
                 f"RabbitMQ node {self.node} startup")  # fmt: skip

    def stop(self) -> None:
        self._ctl("stop")
        if self._process is not None:
            self._process.wait(timeout=60)
            self._process = None

    def _ctl(self, *args: str, check: bool = True) -> bool:
        result = subprocess.run(
            [_rabbitmq_script("rabbitmqctl"), "-n", self.node, *args], env=self._env, capture_output=True, timeout=90
        )
        if check and result.returncode != 0:
            raise InfraError(f"rabbitmqctl {args[0]} failed: {result.stderr.decode(errors='replace')[-500:]}")
        return result.returncode == 0

    def destroy(self) -> None:
        if self._process is None:
            return
        try:
            self.stop()
        except (InfraError, subprocess.TimeoutExpired):
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._process = None
