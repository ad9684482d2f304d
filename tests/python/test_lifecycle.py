"""Closing from anywhere: from a callback or a subscription's own handler (closed once
that returns, never by the thread on itself), while another thread waits in the client,
and with an iterator subscription whose reader stopped reading."""
import threading
import time

import pytest

import sagebus

from conftest import eventually


def test_a_client_closed_from_its_own_callback(broker, echo):
    c = sagebus.Client(broker.endpoint)
    assert c.wait_connected(10)
    done = threading.Event()

    def close_it(future):
        c.close()  # on the client's callback thread: closed once this returns
        done.set()

    c.call_async("echo", "echo", b"x").add_done_callback(close_it)
    assert done.wait(10)
    assert eventually(lambda: c.closed, 10)
    with pytest.raises(sagebus.Cancelled):
        c.call("echo", "echo", b"x")


def test_a_subscription_closed_from_its_own_handler(client):
    got = []

    def once(message):
        got.append(message.payload)
        sub.close()

    sub = client.subscribe("once.>", once)
    assert sub.wait_subscribed(10)
    client.publish("once.a", b"1", confirm=True)
    assert eventually(lambda: got == [b"1"], 10)
    assert eventually(lambda: client.publish("once.a", b"2", confirm=True) == 0, 10)
    assert got == [b"1"]


def test_a_message_queued_behind_the_handler_that_closes_is_not_handled(client):
    # The second message reaches the client while the first one's handler runs, before
    # that handler closes the subscription: closing from the handler ends the handler's
    # calls at once, though the subscription itself ends only once the handler returns.
    got = []
    second_queued = threading.Event()

    def once(message):
        got.append(message.payload)
        assert second_queued.wait(10)
        sub.close()

    sub = client.subscribe("queued.>", once)
    assert sub.wait_subscribed(10)
    client.publish("queued.a", b"1", confirm=True)
    assert eventually(lambda: got == [b"1"], 10)
    assert client.publish("queued.a", b"2", confirm=True) == 1
    second_queued.set()
    assert eventually(lambda: client.publish("queued.a", b"3", confirm=True) == 0, 10)
    assert got == [b"1"]


def test_closing_a_client_ends_a_receive_waiting_in_another_thread(broker):
    c = sagebus.Client(broker.endpoint)
    assert c.wait_connected(10)
    outcome = []

    def wait():
        try:
            outcome.append(c.receive(timeout=None))
        except sagebus.Error as e:
            outcome.append(e)

    waiter = threading.Thread(target=wait)
    waiter.start()
    # Whether close() comes before the receive or during it, the receive ends Cancelled.
    started = time.monotonic()
    c.close()
    waiter.join(10)
    assert not waiter.is_alive()
    assert time.monotonic() - started < 5
    assert isinstance(outcome[0], sagebus.Cancelled)


def test_an_iterator_subscription_nobody_reads_does_not_hold_up_close(broker):
    c = sagebus.Client(broker.endpoint)
    assert c.wait_connected(10)
    sub = c.subscribe("flood.>", buffer=2)
    assert sub.wait_subscribed(10)
    for i in range(10):
        c.publish("flood.x", bytes([i]), confirm=True)
    started = time.monotonic()
    c.close()
    assert time.monotonic() - started < 5


def test_a_strided_buffer_is_refused(client, echo):
    with pytest.raises(TypeError, match="contiguous"):
        client.call("echo", "echo", memoryview(b"abcdef")[::2])
