"""Settlement.well_formed: how every consumer decodes its batch before its real work."""

from __future__ import annotations

from herald.queues.consumer import Delivery
from herald.queues.deadletter import Settlement
from herald.v1.queue_pb2 import ServiceCallback, ServiceCallbackBatch


def _delivery(body: bytes, queue: str = "service-callbacks") -> Delivery:
    return Delivery(queue=queue, body=body, redelivered=False, message=None, headers={})


def _batch(*ids: str) -> bytes:
    return ServiceCallbackBatch(callbacks=[ServiceCallback(id=i) for i in ids]).SerializeToString()


def _items(body: bytes) -> list[ServiceCallback]:
    return list(ServiceCallbackBatch.FromString(body).callbacks)


def _handleable(callback: ServiceCallback) -> bool:
    return callback.id != "bad"


def test_well_formed_items_are_kept_in_order_and_the_rest_dead_lettered_alone() -> None:
    settlement = Settlement()
    kept = settlement.well_formed([_delivery(_batch("a", "bad")), _delivery(_batch("b"))], _items, _handleable)
    assert [c.id for c in kept] == ["a", "b"]
    assert settlement.dead == {("service-callbacks", "malformed"): [ServiceCallback(id="bad").SerializeToString()]}
    assert settlement.rejected == []


def test_an_undecodable_body_is_rejected_whole_and_the_others_still_read() -> None:
    settlement = Settlement()
    broken = _delivery(b"\xff\xff\xff")
    kept = settlement.well_formed([broken, _delivery(_batch("a"))], _items, _handleable)
    assert [c.id for c in kept] == ["a"]
    assert settlement.rejected == [broken]
    assert settlement.dead == {}
