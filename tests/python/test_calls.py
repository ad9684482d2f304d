"""Request-response from Python: sync, future and asyncio calls; each status as its
exception; handlers (plain, async def, a class's methods) and their exceptions; many
threads on one client; nested calls; bad input."""
import asyncio
import concurrent.futures
import threading
import time

import pytest

import sagebus


def test_sync_future_and_asyncio_calls_return_the_reply(client, echo):
    assert client.call("echo", "echo", b"hello") == b"hello"
    assert client.call_async("echo", "upper", b"future").result(timeout=10) == b"FUTURE"

    async def main():
        one = await client.acall("echo", "upper", b"awaited")
        many = await asyncio.gather(*(client.acall("echo", "echo", bytes([i])) for i in range(50)))
        return one, many

    one, many = asyncio.run(main())
    assert one == b"AWAITED"
    assert many == [bytes([i]) for i in range(50)]


def test_payloads_are_bytes_like_and_nothing_else(client, echo):
    assert client.call("echo", "echo", bytearray(b"ba")) == b"ba"
    assert client.call("echo", "echo", memoryview(b"mv")) == b"mv"
    with pytest.raises(TypeError, match="payload must be bytes"):
        client.call("echo", "echo", "a str")
    with pytest.raises(TypeError):
        client.call("echo", "echo", 42)
    with pytest.raises(TypeError, match="unknown option"):
        sagebus.Client("tcp://127.0.0.1:1", tiemout=3)
    with pytest.raises(TypeError):
        client.call("echo", "echo", b"x", tiemout=3)
    with pytest.raises(ValueError, match="timeout"):
        client.call("echo", "echo", b"x", timeout=-1)


def test_each_failure_is_its_status_exception(broker, client, echo):
    with pytest.raises(sagebus.NoResponders) as e:
        client.call("nobody", "m")
    assert isinstance(e.value, LookupError)
    assert e.value.status == sagebus.Status.NO_RESPONDERS
    assert "nobody" in e.value.message

    with pytest.raises(sagebus.NotFound):
        client.call("echo", "no-such-method")

    with pytest.raises(sagebus.InvalidArgument) as e:
        client.call("bad name!", "m")
    assert isinstance(e.value, ValueError)

    with pytest.raises(sagebus.HandlerError) as e:
        client.call("echo", "fail", b"x")
    assert e.value.remote_type == "ValueError"
    assert e.value.message == "ValueError: bad input: x"

    with pytest.raises(sagebus.Unavailable):
        with sagebus.Client("tcp://127.0.0.1:1") as nowhere:
            nowhere.call("echo", "echo", b"x", timeout=1)

    future = client.call_async("nobody", "m")
    with pytest.raises(sagebus.NoResponders):
        future.result(timeout=10)
    assert all(issubclass(cls, sagebus.Error) for cls in (
        sagebus.Overloaded, sagebus.Undeliverable, sagebus.PermissionDenied, sagebus.Cancelled,
        sagebus.Internal, sagebus.Unauthenticated))


def test_a_slow_handler_is_deadline_exceeded_also_a_timeout_error(broker, client):
    gate = threading.Event()
    with sagebus.Client(broker.endpoint) as c:
        slow = sagebus.Service(c, "slow")

        @slow.method("wait")
        def wait(request):
            gate.wait(10)
            return b"late"

        slow.start(wait=10)
        started = time.monotonic()
        with pytest.raises(TimeoutError) as e:
            client.call("slow", "wait", timeout=0.3)
        assert isinstance(e.value, sagebus.DeadlineExceeded)
        assert time.monotonic() - started < 2
        gate.set()
        slow.stop()


def test_a_handler_raising_sagebus_error_keeps_its_status(broker, client):
    with sagebus.Client(broker.endpoint) as c:
        s = sagebus.Service(c, "strict")

        @s.method("m")
        def m(request):
            raise sagebus.InvalidArgument("payload must not be empty")

        s.start(wait=10)
        with pytest.raises(sagebus.InvalidArgument, match="payload must not be empty"):
            client.call("strict", "m")
        s.stop()


def test_a_reserved_service_name_is_refused_permission_denied(broker):
    with sagebus.Client(broker.endpoint) as c:
        with pytest.raises(sagebus.PermissionDenied, match="reserved"):
            sagebus.Service(c, "$broker")


def test_closing_the_client_cancels_its_calls_and_then_refuses_them(broker, client):
    gate = threading.Event()
    with sagebus.Client(broker.endpoint) as c:
        s = sagebus.Service(c, "stuck")
        s.handle("m", lambda r: gate.wait(10) and b"")
        s.start(wait=10)
        caller = sagebus.Client(broker.endpoint)
        assert caller.wait_connected(10)
        future = caller.call_async("stuck", "m", timeout=10)
        caller.close()
        with pytest.raises(sagebus.Cancelled):
            future.result(timeout=10)
        with pytest.raises(sagebus.Error, match="closed"):
            caller.call("stuck", "m")
        gate.set()
        s.stop()


def test_async_def_handlers_run_on_the_services_loop(broker, client):
    with sagebus.Client(broker.endpoint) as c:
        s = sagebus.Service(c, "aio", max_inflight=32)
        threads = set()

        @s.method("sleep")
        async def sleep(request):
            threads.add(threading.current_thread().name)
            await asyncio.sleep(0.05)
            return b"slept " + request.payload

        s.start(wait=10)
        started = time.monotonic()
        futures = [client.call_async("aio", "sleep", bytes([65 + i])) for i in range(16)]
        assert [f.result(timeout=10) for f in futures] == [b"slept " + bytes([65 + i]) for i in range(16)]
        assert time.monotonic() - started < 0.05 * 16  # they ran at once on the loop
        assert threads == {"sagebus-aio-loop"}
        s.stop()


def test_64_threads_share_one_client(client, echo):
    def work(i):
        for j in range(20):
            payload = f"{i}-{j}".encode()
            assert client.call("echo", "echo", payload) == payload
        return i

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        assert sorted(pool.map(work, range(64))) == list(range(64))


def test_a_handler_calls_another_service_from_inside(broker, client, echo):
    with sagebus.Client(broker.endpoint) as c:
        outer = sagebus.Service(c, "outer")

        @outer.method("shout")
        def shout(request):
            return c.call("echo", "upper", request.payload) + b"!"

        outer.start(wait=10)
        assert client.call("outer", "shout", b"hey") == b"HEY!"
        outer.stop()


class Memory:
    def __init__(self):
        self.items = ["a", "b", "c"]

    def retrieve(self, query, k=1):
        return [query + ":" + item for item in self.items[:k]]

    async def count(self):
        await asyncio.sleep(0)
        return len(self.items)

    def _private(self):
        raise AssertionError("never served")


def test_a_class_is_a_service_and_call_service_reaches_its_methods(broker, client):
    with sagebus.Client(broker.endpoint) as c:
        memory = sagebus.Service(c, "memory", handler=Memory())
        memory.start(wait=10)
        assert sagebus.call_service("memory", "q", k=2, method="retrieve", client=client) == \
            ["q:a", "q:b"]
        assert client.call_service("memory", method="count") == 3
        assert client.call_service_async("memory", "z", method="retrieve").result(10) == ["z:a"]
        with pytest.raises(sagebus.NotFound):
            client.call_service("memory", method="_private")
        with pytest.raises(sagebus.HandlerError, match="TypeError"):
            client.call_service("memory", "q", bogus=1, method="retrieve")
        memory.stop()


def test_unknown_service_options_and_bad_handlers_are_type_errors(client):
    with pytest.raises(TypeError, match="unknown option"):
        sagebus.Service(client, "x", max_inflite=3)
    s = sagebus.Service(client, "x")
    with pytest.raises(TypeError, match="callable"):
        s.handle("m", "not a function")


def test_more_outstanding_calls_than_max_pending_are_overloaded(broker):
    gate = threading.Event()
    with sagebus.Client(broker.endpoint) as c, \
            sagebus.Client(broker.endpoint, max_pending=1) as caller:
        s = sagebus.Service(c, "held")
        s.handle("m", lambda r: gate.wait(10) and b"done")
        s.start(wait=10)
        assert caller.wait_connected(10)
        first = caller.call_async("held", "m", timeout=10)
        with pytest.raises(sagebus.Overloaded, match="max_pending"):
            caller.call("held", "m")
        gate.set()
        assert first.result(timeout=10) == b"done"
        s.stop()
