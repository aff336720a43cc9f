"""herald.supervisor with small Python children: merged prefixed output, restarts with a pause, and a stop
that goes tier by tier and kills what ignores SIGTERM."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

from herald.supervisor import Child, Supervisor, descendants, processes
from tests.support import process_alive, wait_for


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _ready(out: io.StringIO, line: str) -> bool:
    return line in out.getvalue()


def test_output_is_merged_under_each_childs_name() -> None:
    out = io.StringIO()
    supervisor = Supervisor(out=out, grace=5)
    supervisor.start([Child("alpha", _python("print('one'); print('two')")), Child("beta", _python("print('three')"))])
    wait_for(lambda: _ready(out, "three") and _ready(out, "two"), timeout=20)
    supervisor.stop()
    lines = out.getvalue().splitlines()
    assert any(line.startswith("alpha") and line.endswith("| one") for line in lines)
    assert any(line.startswith("beta") and line.endswith("| three") for line in lines)


def test_a_child_that_dies_is_restarted_after_a_growing_pause() -> None:
    out = io.StringIO()
    supervisor = Supervisor(out=out, grace=5, first_backoff=0.1, max_backoff=0.4)
    supervisor.start([Child("flaky", _python("import sys; print('up'); sys.exit(3)"))])
    wait_for(lambda: out.getvalue().count("| up") >= 4, timeout=30)  # the first run and three restarts
    supervisor.stop()
    pauses = [line.rsplit("restarting in ", 1)[1] for line in out.getvalue().splitlines() if "restarting in" in line]
    assert pauses[:4] == ["0.1 s", "0.2 s", "0.4 s", "0.4 s"][: len(pauses[:4])]
    assert "flaky exited with 3" in out.getvalue()
    assert supervisor.restarts("flaky") >= 3


def test_stop_goes_tier_by_tier_and_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    order = tmp_path / "order"
    on_term = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        "    time.sleep({pause}); open({path!r}, 'a').write('{name}\\n'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye); print('ready', flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    out = io.StringIO()
    supervisor = Supervisor(out=out, grace=1.5)
    supervisor.start([Child("infra", _python(on_term.format(pause=0, path=str(order), name="infra")))])
    supervisor.start(
        [
            Child("service", _python(on_term.format(pause=0.5, path=str(order), name="service"))),
            Child("stubborn", _python(stubborn)),
        ]
    )
    wait_for(lambda: out.getvalue().count("| ready") == 3, timeout=30)
    pids = supervisor.pids()
    codes = supervisor.stop()
    # The service, slower to stop, still stopped before the infrastructure was asked to.
    assert order.read_text().split() == ["service", "infra"]
    assert codes == {"infra": 0, "service": 0, "stubborn": -signal.SIGKILL}
    assert "stubborn did not stop within 2 s: killed" in out.getvalue()
    assert [pid for pid in pids if process_alive(pid)] == []


def test_nothing_restarts_once_stopping() -> None:
    out = io.StringIO()
    supervisor = Supervisor(out=out, grace=5, first_backoff=0.1)
    supervisor.start([Child("worker", _python("import time; print('ready', flush=True); time.sleep(60)"))])
    wait_for(lambda: _ready(out, "ready"), timeout=20)
    assert supervisor.stop() == {"worker": -signal.SIGTERM}
    assert supervisor.pids() == []
    assert "restarting" not in out.getvalue()


def test_descendants_are_children_and_theirs_and_not_the_root() -> None:
    spawn = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
    child = subprocess.Popen(_python(spawn + "time.sleep(30)"))
    try:
        below = wait_for(lambda: descendants([child.pid]) or None, timeout=20)
        (grandchild,) = below
        assert processes()[grandchild][0] == child.pid
        mine = descendants([os.getpid()])
        assert {child.pid, grandchild} <= set(mine) and os.getpid() not in mine
    finally:
        for pid in descendants([child.pid]):
            os.kill(pid, signal.SIGKILL)
        child.kill()
        child.wait()
