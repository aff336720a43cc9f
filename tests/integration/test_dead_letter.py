"""The dead-letter queue is visible and replayable: `herald dead-letter list` and `replay [--id ...]`."""

from __future__ import annotations

import json
import uuid

import pytest
from kombu import Connection

from herald import cli
from herald.queues import ConfirmingPublisher
from herald.queues.deadletter import dead_letter
from herald.queues.topology import DEAD_LETTER, queue
from herald.v1.queue_pb2 import NotificationMessage
from tests.support import take_queued


def test_list_then_replay_one_letter(
    clean_broker: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HERALD_BROKER_URL", clean_broker)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    publisher = ConfirmingPublisher(clean_broker)
    dead_letter(publisher, "db-sms", "refused", [NotificationMessage(id=first).SerializeToString()])
    dead_letter(publisher, "send-email", "malformed", [NotificationMessage(id=second).SerializeToString()])
    publisher.close()

    assert cli.main(["dead-letter", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [
        {"queue": "db-sms", "reason": "refused", "ids": [first]},
        {"queue": "send-email", "reason": "malformed", "ids": [second]},
    ]
    # Listing takes nothing away.
    assert cli.main(["dead-letter", "list"]) == 0
    assert capsys.readouterr().out.startswith("2 dead letter(s)")

    assert cli.main(["dead-letter", "replay", "--id", first]) == 0
    assert "replayed 1" in capsys.readouterr().out
    assert [m.id for m in take_queued(clean_broker, "db-sms")] == [first]
    assert cli.main(["dead-letter", "list", "--json"]) == 0
    assert [letter["ids"] for letter in json.loads(capsys.readouterr().out)] == [[second]]

    assert cli.main(["dead-letter", "replay"]) == 0
    assert [m.id for m in take_queued(clean_broker, "send-email")] == [second]
    with Connection(clean_broker) as conn:
        assert queue(DEAD_LETTER)(conn.default_channel).get(no_ack=True) is None
