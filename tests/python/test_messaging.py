"""Publish-subscribe with wildcards (callback, iterator, async iterator), named peers with
delivery receipts, and LegacyQueue's queue.Queue shape."""
import asyncio
import queue
import threading

import pytest

import sagebus


def test_a_callback_subscription_gets_what_its_wildcards_match(client):
    got = []
    done = threading.Event()

    def on_message(message):
        got.append((message.topic, message.payload))
        if len(got) == 3:
            done.set()

    with client.subscribe("jobs.*.done", on_message) as sub:
        assert sub.wait_subscribed(10)
        for topic in ("jobs.a.done", "jobs.b.failed", "jobs.b.done", "other.a.done", "jobs.c.done"):
            client.publish(topic, topic.encode(), confirm=True)
        assert done.wait(10)
    assert got == [("jobs.a.done", b"jobs.a.done"), ("jobs.b.done", b"jobs.b.done"),
                   ("jobs.c.done", b"jobs.c.done")]


def test_an_iterator_subscription_reads_in_order_and_ends_when_closed(client):
    sub = client.subscribe("metrics.>")
    assert sub.wait_subscribed(10)
    assert client.publish("metrics.cpu.load", b"1", confirm=True) == 1
    client.publish("metrics.mem", b"2", confirm=True)
    it = iter(sub)
    assert next(it).payload == b"1"
    second = next(it)
    assert (second.topic, second.payload) == ("metrics.mem", b"2")
    assert sub.get(timeout=0.1) is None
    sub.close()
    assert list(it) == []


def test_an_async_iterator_subscription(client):
    async def main():
        sub = client.subscribe("events.*")
        assert sub.wait_subscribed(10)
        for i in range(5):
            client.publish("events.x", str(i).encode(), confirm=True)
        seen = []
        async for message in sub:
            seen.append(message.payload)
            if len(seen) == 5:
                break
        sub.close()
        return seen

    assert asyncio.run(main()) == [b"0", b"1", b"2", b"3", b"4"]


def test_a_bad_topic_is_invalid_argument(client):
    with pytest.raises(sagebus.InvalidArgument):
        client.publish("bad topic", b"x")
    with pytest.raises(sagebus.InvalidArgument):
        client.subscribe("a..b", lambda m: None)


def test_named_peers_send_with_a_delivery_receipt(broker):
    with sagebus.Client(broker.endpoint, name="py-alice") as alice, \
            sagebus.Client(broker.endpoint, name="py-bob") as bob:
        assert alice.wait_connected(10) and bob.wait_connected(10)
        alice.send("py-bob", b"hi bob")  # returns once bob's client took it
        message = bob.receive(timeout=10)
        assert (message.sender, message.payload) == ("py-alice", b"hi bob")
        assert bob.receive(timeout=0.05) is None
        with pytest.raises(sagebus.Undeliverable):
            alice.send("py-nobody", b"?")


def test_a_legacy_queue_has_queue_queues_shape(broker):
    with sagebus.Client(broker.endpoint) as producer, sagebus.Client(broker.endpoint) as consumer:
        out = sagebus.LegacyQueue(producer, "jobs")
        into = sagebus.LegacyQueue(consumer, "jobs")
        for i in range(3):
            out.put(f"job-{i}".encode())
        assert out.qsize() == 3
        assert [into.get(timeout=5) for _ in range(3)] == [b"job-0", b"job-1", b"job-2"]
        into.task_done()
        with pytest.raises(queue.Empty):
            into.get(timeout=0.2)
        with pytest.raises(queue.Empty):
            into.get_nowait()
        with pytest.raises(TypeError):
            out.put("a str")
