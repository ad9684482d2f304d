"""Streamed replies from Python, as tests/integration/test_streams.cpp checks them in C++:
order and completeness (sync and async iteration), flow control (a stalled reader stops
the service's writer at the window), an instance killed mid-stream, the deadline and the
idle timeout, the handler's error after its chunks, plain calls to streaming methods and
streams of plain methods, and each kind of streaming handler."""
import asyncio
import threading
import time

import pytest

import sagebus

from conftest import eventually, python, wait_for_line


def settled(value, quiet=0.3, timeout=5.0):
    """value() once it has not changed for `quiet` seconds; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            pytest.fail(f"still changing after {timeout} s (last {last})")
        time.sleep(0.01)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
    return last


def chunk(i: int) -> bytes:
    return b"chunk-%d" % i


@pytest.fixture
def counting(broker):
    """Service "tokens" on its own client: streaming method "count" yields as many chunks
    as its payload says (chunk-<i>, padded to the header "pad" bytes), counting in
    produced[0] those it has produced; "plain" answers "plain:<payload>"; "fail" yields
    two chunks, then raises."""
    produced = [0]
    with sagebus.Client(broker.endpoint, name="tokens-instance") as c:
        service = sagebus.Service(c, "tokens", max_inflight=4)

        @service.method("count")  # a generator function: a streaming method
        def count(request):
            pad = int(request.headers.get("pad", "0"))
            for i in range(int(request.payload)):
                produced[0] += 1
                yield chunk(i).ljust(pad, b".")

        @service.method("plain")
        def plain(request):
            return b"plain:" + request.payload

        @service.method("fail")
        def fail(request):
            yield b"one"
            yield b"two"
            raise ValueError("no three")

        service.start(wait=10)
        yield produced
        service.stop()


def test_10000_chunks_arrive_complete_and_in_order(client, counting):
    stream = client.stream("tokens", "count", b"10000", timeout=30)
    assert list(stream) == [chunk(i) for i in range(10000)]
    assert stream.chunks == 10000


def test_10000_chunks_arrive_complete_and_in_order_with_async_for(client, counting):
    async def main():
        ticks = 0

        async def ticker():  # the loop keeps running other tasks meanwhile
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(ticker())
        got = []
        async for c in client.stream("tokens", "count", b"10000", timeout=30):
            got.append(c)
        other.cancel()
        return got, ticks

    got, ticks = asyncio.run(main())
    assert got == [chunk(i) for i in range(10000)]
    assert ticks > 0


@pytest.mark.parametrize("reader", ["sync", "async"])
def test_a_stalled_reader_stops_the_writer_at_the_window(client, counting, reader):
    window = 16  # chunks of 16 KiB
    # 4,000 chunks of 16 KiB: 64 MiB, were anything to buffer them.
    stream = client.stream("tokens", "count", b"4000", timeout=30, window_bytes=window * 16 * 1024,
                           headers={"pad": str(16 * 1024)})

    def check_stalled():
        # The writer stops once the window is spent (its last chunk may overrun it): one
        # chunk read, so at most the window plus that one, plus the half window a reader's grant may add, plus the
        # chunk the generator has produced and its writer waits to send.
        assert eventually(lambda: counting[0] >= window)
        stalled_at = settled(lambda: counting[0])
        assert window <= stalled_at <= window + 1 + window // 2 + 1
        assert stream.chunks == 1

    if reader == "sync":
        assert next(stream) == chunk(0).ljust(16 * 1024, b".")
        check_stalled()
        rest = list(stream)
    else:
        async def main():
            chunks = stream.__aiter__()
            first = await chunks.__anext__()
            # The wait runs off the loop, as a stalled application's loop would go on.
            await asyncio.get_running_loop().run_in_executor(None, check_stalled)
            return [first] + [c async for c in chunks]

        got = asyncio.run(main())
        assert got[0] == chunk(0).ljust(16 * 1024, b".")
        rest = got[1:]
    assert [c.rstrip(b".") for c in rest] == [chunk(i) for i in range(1, 4000)]
    assert counting[0] == 4000


DOOMED = """
    import sys, threading, sagebus
    with sagebus.Client(sys.argv[1], name="doomed") as c:
        s = sagebus.Service(c, "doomed", max_inflight=1)

        @s.method("tokens")
        def tokens(request):
            for i in range(5):
                yield b"token-%d" % i
            print("wrote 5", flush=True)
            threading.Event().wait(60)  # until it is killed

        s.start(wait=10)
        print("ready", flush=True)
        threading.Event().wait(60)
"""


@pytest.mark.parametrize("reader", ["sync", "async"])
def test_an_instance_killed_mid_stream_gives_exactly_one_unavailable(broker, client, reader):
    child = python(DOOMED, broker.endpoint)
    try:
        assert wait_for_line(child, "ready", 20), child.stderr.read1().decode()
        stream = client.stream("doomed", "tokens", timeout=20)
        got, failures = [], []

        def on_chunk(c):
            got.append(c)
            if len(got) == 5:
                assert wait_for_line(child, "wrote 5", 10)
                child.kill()

        if reader == "sync":
            try:
                for c in stream:
                    on_chunk(c)
            except sagebus.Error as e:
                failures.append(e)
        else:
            async def main():
                try:
                    async for c in stream:
                        on_chunk(c)
                except sagebus.Error as e:
                    failures.append(e)

            asyncio.run(main())
        assert got == [b"token-%d" % i for i in range(5)]
        assert len(failures) == 1
        assert isinstance(failures[0], sagebus.Unavailable)
        assert isinstance(failures[0], ConnectionError)
        # The end stays what it was: no other outcome follows.
        with pytest.raises(sagebus.Unavailable):
            next(stream)
        assert stream.chunks == 5
    finally:
        child.kill()
        child.communicate(timeout=10)


def test_the_deadline_covers_the_whole_stream(client, counting):
    # A window of 1 byte never read past the first chunk: the writer waits, the deadline
    # ends it.
    stream = client.stream("tokens", "count", b"100", timeout=0.3, window_bytes=1)
    assert next(stream) == chunk(0)
    started = time.monotonic()
    with pytest.raises(sagebus.DeadlineExceeded) as e:
        for _ in stream:
            time.sleep(0.5)
    assert isinstance(e.value, TimeoutError)
    assert time.monotonic() - started < 5


def test_an_idle_timeout_ends_a_stream_whose_next_chunk_is_late_and_cancels_it(broker, client):
    cancelled = threading.Event()
    with sagebus.Client(broker.endpoint) as c:
        slow = sagebus.Service(c, "slow", max_inflight=1)

        @slow.method("drip")
        def drip(request):
            yield b"first"
            if request.context.cancel.wait(10):
                cancelled.set()

        slow.start(wait=10)
        stream = client.stream("slow", "drip", timeout=10, idle_timeout=0.2)
        assert next(stream) == b"first"
        with pytest.raises(sagebus.DeadlineExceeded, match="idle_timeout"):
            next(stream)
        assert cancelled.wait(5)
        slow.stop()


def test_a_handlers_error_ends_the_stream_after_its_chunks(client, counting):
    got = []
    with pytest.raises(sagebus.HandlerError) as e:
        for c in client.stream("tokens", "fail"):
            got.append(c)
    assert got == [b"one", b"two"]
    assert e.value.remote_type == "ValueError"
    assert e.value.message == "ValueError: no three"


def test_a_plain_call_to_a_streaming_method_is_invalid_argument(client, counting):
    with pytest.raises(sagebus.InvalidArgument, match="stream"):
        client.call("tokens", "count", b"3")


def test_a_stream_of_a_plain_method_yields_its_reply_as_one_chunk(client, counting):
    assert list(client.stream("tokens", "plain", b"x")) == [b"plain:x"]


def test_bad_stream_options_and_names_are_refused(client):
    for window in (0, (64 << 20) + 1):
        with pytest.raises(sagebus.InvalidArgument, match="window_bytes"):
            client.stream("tokens", "count", window_bytes=window)
    with pytest.raises(sagebus.InvalidArgument):
        client.stream("bad name!", "count")
    with pytest.raises(ValueError, match="timeout"):
        client.stream("tokens", "count", idle_timeout=-1)
    with pytest.raises(TypeError, match="payload must be bytes"):
        client.stream("tokens", "count", "a str")
    with pytest.raises(TypeError, match="CancelToken"):
        client.stream("tokens", "count", cancel="soon")


def test_no_responders_ends_the_stream_at_its_first_read(client):
    stream = client.stream("nobody", "m")
    with pytest.raises(sagebus.NoResponders):
        next(stream)


def test_each_kind_of_streaming_handler(broker, client):
    with sagebus.Client(broker.endpoint) as c:
        s = sagebus.Service(c, "kinds", max_inflight=8)

        @s.stream_method("iterable")  # any iterable of bytes, not only a generator
        def iterable(request):
            return [b"a", bytearray(b"b"), memoryview(b"c")]

        s.handle_stream("lambda", lambda request: (bytes([b]) for b in request.payload))

        @s.method("agen")  # an async generator, on the service's event loop
        async def agen(request):
            for i in range(3):
                await asyncio.sleep(0)
                yield b"async-%d" % i

        @s.stream_method("not-bytes")
        def not_bytes(request):
            yield b"fine"
            yield "a str"

        @s.stream_method("returns-bytes")
        def returns_bytes(request):
            return b"not an iterable of chunks"

        with pytest.raises(TypeError, match="async generator"):
            async def coroutine(request):
                return b""
            s.handle_stream("coroutine", coroutine)

        s.start(wait=10)
        assert list(client.stream("kinds", "iterable")) == [b"a", b"b", b"c"]
        assert list(client.stream("kinds", "lambda", b"xyz")) == [b"x", b"y", b"z"]
        assert list(client.stream("kinds", "agen")) == [b"async-0", b"async-1", b"async-2"]
        got = []
        with pytest.raises(sagebus.HandlerError, match="TypeError: a chunk must be bytes"):
            for c in client.stream("kinds", "not-bytes"):
                got.append(c)
        assert got == [b"fine"]
        with pytest.raises(sagebus.HandlerError, match="iterable of chunks"):
            list(client.stream("kinds", "returns-bytes"))
        s.stop()


def test_a_streaming_handler_sees_its_request(broker, client):
    with sagebus.Client(broker.endpoint) as c:
        s = sagebus.Service(c, "req")

        @s.method("describe")
        def describe(request):
            yield request.method.encode()
            yield request.payload
            yield request.headers["h"].encode()
            yield request.trace_id.encode()
            yield b"%d" % round(request.time_left())

        s.start(wait=10)
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        assert list(client.stream("req", "describe", b"p", headers={"h": "v"}, timeout=30,
                                  traceparent=tp)) == \
            [b"describe", b"p", b"v", b"4bf92f3577b34da6a3ce929d0e0e4736", b"30"]
        s.stop()


def test_closing_the_client_ends_its_streams_cancelled(broker, counting):
    caller = sagebus.Client(broker.endpoint)
    assert caller.wait_connected(10)
    stream = caller.stream("tokens", "count", b"1000", timeout=10, window_bytes=2)
    assert next(stream) == chunk(0)
    caller.close()
    with pytest.raises(sagebus.Cancelled, match="closed"):
        list(stream)
