"""A dispatcher imports what its queues' roles use: boto3 and the SES client (~20 MB of memory) only where
email is sent. Each case builds a dispatcher in a fresh interpreter, since this one has imported boto3."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]

_BUILD = """
import sys
from herald.db.engine import make_engine
from herald.settings import Settings
from services.dispatcher import app

settings = Settings.from_env()
built = app.build(settings, make_engine(settings.database_url), sys.argv[1].split(","))
built.server.stop(0)
print(sorted({"boto3", "botocore"} & set(sys.modules)))
"""


@pytest.mark.parametrize(
    ("queues", "imported"),
    [
        ("send-sms", []),
        ("send-sms,db-sms,bulk-sms,send-bulk-sms", []),
        ("send-sms,send-email", ["boto3", "botocore"]),
        ("send-bulk-email", ["boto3", "botocore"]),
    ],
)
def test_only_a_dispatcher_that_sends_email_imports_boto3(
    queues: str, imported: list[str], database_url: str, clean_broker: str
) -> None:
    env = dict(
        os.environ,
        HERALD_DATABASE_URL=database_url,
        HERALD_BROKER_URL=clean_broker,
        HERALD_DISPATCHER_ADDRESS=f"127.0.0.1:{free_port()}",
    )
    done = subprocess.run(
        [sys.executable, "-c", _BUILD, queues], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(imported)
