from herald.queues.broker import connect, gather_seconds


def test_a_redis_broker_gives_a_dead_consumers_messages_back_within_a_minute_not_an_hour() -> None:
    conn = connect("redis://127.0.0.1:6399/0")
    assert conn.transport_options == {"visibility_timeout": 60}
    assert conn.transport_cls == "redis"


def test_rabbitmq_needs_no_options_and_each_connection_has_its_own() -> None:
    assert connect("amqp://guest:guest@127.0.0.1:5672//").transport_options == {}
    first, second = connect("redis://h/0"), connect("redis://h/0")
    first.transport_options["visibility_timeout"] = 1
    assert second.transport_options == {"visibility_timeout": 60}


def test_a_publisher_gathers_items_on_the_real_brokers_not_in_process() -> None:
    assert gather_seconds("redis://127.0.0.1:6399/0") == 0.005
    assert gather_seconds("amqp://guest:guest@127.0.0.1:5672//") == 0.005
    assert gather_seconds("memory://") == 0.0
