"""Cancellation and call context from Python, as tests/integration/test_cancel.cpp and
test_call_context.cpp check them in C++: each way of giving up a call or a stream reaches
its handler (request.cancelled, a CancelToken's wait, a generator's Cancelled at its
yield, an async handler's task) within a bounded time, and the instance (max_inflight=1)
then takes a new call at once; a chain of three services called through their requests'
contexts shares one trace id and one deadline, and cancelling the first call cancels all
three."""
import asyncio
import gc
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import sagebus


class Held:
    """Service "held" (max_inflight=1) whose handlers wait until their call is cancelled
    and report how they learnt it in .seen: "wait" (plain, CancelToken.wait), "drip"
    (a generator: one chunk, then a wait, then Cancelled at its next yield), "flood" (a
    generator whose writer waits for the caller's window), "sleep" (async def),
    "aflood" and "adrip" (async generators, waiting for the window and between chunks).
    "ping" answers at once."""

    def __init__(self, client: sagebus.Client):
        self.entered = threading.Event()
        self.seen: "queue.Queue[str]" = queue.Queue()
        self.service = s = sagebus.Service(client, "held", max_inflight=1)
        s.handle("ping", lambda request: b"pong")

        @s.method("wait")
        def wait(request):
            self.entered.set()
            if request.context.cancel.wait(10) and request.cancelled:
                self.seen.put("cancelled")
            return b"too late"

        @s.method("drip")
        def drip(request):
            self.entered.set()
            try:
                yield b"first"
                request.context.cancel.wait(10)
                yield b"never read"  # its write raises Cancelled, here
                self.seen.put("not cancelled")
            except sagebus.Cancelled:
                self.seen.put("cancelled")
                raise

        @s.method("flood")
        def flood(request):
            self.entered.set()
            try:
                i = 0
                while True:
                    yield b"%d" % i
                    i += 1
            except sagebus.Cancelled:
                self.seen.put("cancelled")
                raise

        @s.method("sleep")
        async def sleep(request):
            self.entered.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.seen.put("cancelled")
                raise
            return b"slept"

        @s.method("aflood")
        async def aflood(request):
            self.entered.set()
            try:
                i = 0
                while True:
                    yield b"%d" % i
                    i += 1
            except sagebus.Cancelled:
                await asyncio.sleep(0)  # its cleanup may await
                self.seen.put("cancelled")
                raise

        @s.method("adrip")
        async def adrip(request):
            self.entered.set()
            yield b"first"
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.seen.put("cancelled")
                raise

        s.start(wait=10)

    def check_cancelled(self, client: sagebus.Client) -> None:
        """The handler saw its cancellation, and the instance takes a new call at once."""
        try:
            assert self.seen.get(timeout=5) == "cancelled"
        except queue.Empty:
            pytest.fail("the handler did not see its call cancelled within 5 s")
        started = time.monotonic()
        assert client.call("held", "ping", timeout=2) == b"pong"
        assert time.monotonic() - started < 1


@pytest.fixture
def held(broker):
    with sagebus.Client(broker.endpoint, name="held-instance") as c:
        h = Held(c)
        yield h
        h.service.stop(drain=1)


def test_future_cancel_reaches_the_handler(client, held):
    future = client.call_async("held", "wait", timeout=10)
    assert held.entered.wait(5)
    assert future.cancel()
    assert future.cancelled()
    with pytest.raises(Exception) as e:  # concurrent.futures.CancelledError
        future.result(timeout=1)
    assert type(e.value).__name__ == "CancelledError"
    held.check_cancelled(client)
    assert not future.cancel() or future.cancelled()


def test_a_finished_future_cannot_be_cancelled(client, held):
    future = client.call_async("held", "ping")
    assert future.result(timeout=5) == b"pong"
    assert not future.cancel()
    assert future.result() == b"pong"


def test_future_cancel_reaches_an_async_handlers_task(client, held):
    future = client.call_async("held", "sleep", timeout=10)
    assert held.entered.wait(5)
    assert future.cancel()
    held.check_cancelled(client)


def test_cancelling_the_task_awaiting_acall_reaches_the_handler(client, held):
    async def main():
        task = asyncio.create_task(client.acall("held", "wait", timeout=10))
        ok = await asyncio.get_running_loop().run_in_executor(None, held.entered.wait, 5)
        assert ok
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    held.check_cancelled(client)


def test_a_cancel_token_gives_up_a_blocking_call(client, held):
    token = sagebus.CancelToken()
    assert not token.cancelled and token.why == ""

    def cancel_once_entered():
        if held.entered.wait(5):
            token.cancel("enough")

    threading.Thread(target=cancel_once_entered).start()
    started = time.monotonic()
    with pytest.raises(sagebus.Cancelled, match="enough"):
        client.call("held", "wait", timeout=10, cancel=token)
    assert time.monotonic() - started < 5
    assert token.cancelled and token.why == "enough"
    held.check_cancelled(client)
    # A cancelled token fails what is made with it at once; a child is cancelled with it.
    with pytest.raises(sagebus.Cancelled, match="enough"):
        client.call("held", "ping", cancel=token)
    assert token.child().cancelled


def test_a_cancel_token_shared_by_calls_cancels_them_all_and_only_them(client, held):
    token = sagebus.CancelToken()
    mine = client.call_async("held", "wait", timeout=10, cancel=token)
    assert held.entered.wait(5)
    # One more that waits (for an instance, at the client), and one without the token.
    waiting = client.call_async("nobody", "m", timeout=10, wait_for_ready=True, cancel=token)
    other = client.call_async("held", "ping", timeout=10)
    token.cancel()
    for future in (mine, waiting):
        with pytest.raises(sagebus.Cancelled):
            future.result(timeout=5)
    held.check_cancelled(client)
    assert other.result(timeout=5) == b"pong"
    # Cancelling one call's future leaves the token alone.
    token2 = sagebus.CancelToken()
    held.entered.clear()
    f = client.call_async("held", "wait", timeout=10, cancel=token2)
    assert held.entered.wait(5)
    assert f.cancel()
    held.check_cancelled(client)
    assert not token2.cancelled


def test_stream_cancel_reaches_a_writer_waiting_for_the_window(client, held):
    stream = client.stream("held", "flood", timeout=10, window_bytes=2)
    assert next(stream) == b"0"
    stream.cancel()
    with pytest.raises(sagebus.Cancelled):
        next(stream)
    held.check_cancelled(client)


def test_stream_cancel_reaches_a_generator_between_chunks(client, held):
    stream = client.stream("held", "drip", timeout=10)
    assert next(stream) == b"first"
    stream.cancel()
    held.check_cancelled(client)


def test_leaving_a_with_block_cancels_the_stream(client, held):
    with client.stream("held", "drip", timeout=10) as stream:
        assert next(stream) == b"first"
    held.check_cancelled(client)


def test_leaving_a_for_loop_early_cancels_the_stream(client, held):
    stream = client.stream("held", "flood", timeout=10, window_bytes=2)
    for chunk in stream:
        break
    with pytest.raises(sagebus.Cancelled):
        next(stream)
    held.check_cancelled(client)


def test_dropping_an_unfinished_stream_cancels_it(client, held):
    stream = client.stream("held", "drip", timeout=10)
    assert next(stream) == b"first"
    del stream
    gc.collect()
    held.check_cancelled(client)


def test_a_cancel_token_cancels_a_stream(client, held):
    token = sagebus.CancelToken()
    stream = client.stream("held", "drip", timeout=10, cancel=token)
    assert next(stream) == b"first"
    token.cancel("stop streaming")
    with pytest.raises(sagebus.Cancelled, match="stop streaming"):
        next(stream)
    held.check_cancelled(client)


def test_leaving_an_async_for_early_cancels_the_stream(client, held):
    async def main():
        stream = client.stream("held", "drip", timeout=10)
        async for chunk in stream:
            assert chunk == b"first"
            break
        # The stream is still referenced: leaving the loop is what cancels it.
        seen = await asyncio.get_running_loop().run_in_executor(None, held.seen.get, True, 5)
        held.seen.put(seen)
        with pytest.raises(sagebus.Cancelled):
            await stream.__anext__()

    asyncio.run(main())
    held.check_cancelled(client)


def test_cancelling_the_task_of_an_async_for_cancels_the_stream(client, held):
    async def main():
        stream = client.stream("held", "drip", timeout=10)
        first = asyncio.Event()

        async def read():
            async for chunk in stream:
                first.set()

        task = asyncio.create_task(read())
        await asyncio.wait_for(first.wait(), 5)
        task.cancel()  # while it waits for the second chunk
        with pytest.raises(asyncio.CancelledError):
            await task
        seen = await asyncio.get_running_loop().run_in_executor(None, held.seen.get, True, 5)
        held.seen.put(seen)
        assert stream.chunks == 1

    asyncio.run(main())
    held.check_cancelled(client)


def test_stream_cancel_reaches_an_async_generator_waiting_for_the_window(client, held):
    stream = client.stream("held", "aflood", timeout=10, window_bytes=2)
    assert next(stream) == b"0"
    stream.cancel()
    held.check_cancelled(client)


def test_leaving_an_async_with_block_cancels_an_async_generator_handler(client, held):
    async def main():
        async with client.stream("held", "adrip", timeout=10) as stream:
            assert await stream.__anext__() == b"first"

    asyncio.run(main())
    held.check_cancelled(client)


def test_ctrl_c_cancels_a_blocking_call_in_the_broker(broker, held):
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, sagebus
        with sagebus.Client(sys.argv[1]) as c:
            assert c.wait_connected(10)
            try:
                c.call("held", "wait", timeout=60)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
    """), broker.endpoint], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert held.entered.wait(20), "the child's call never reached the service"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=20)
        assert "interrupted" in out, err
        try:
            assert held.seen.get(timeout=5) == "cancelled"
        except queue.Empty:
            pytest.fail("the handler did not see the interrupted call cancelled")
    finally:
        child.kill()
        child.communicate(timeout=10)


# --- call context -----------------------------------------------------------------------


class Stage:
    def __init__(self):
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.trace_id = ""
        self.deadline = 0.0


def test_a_chain_of_three_services_shares_one_trace_and_deadline_and_cancels_as_one(
        broker, client):
    a, b, c = Stage(), Stage(), Stage()
    with sagebus.Client(broker.endpoint, name="host") as host:
        services = []

        def forward(stage, name, next_name):
            s = sagebus.Service(host, name, max_inflight=2)

            @s.method("run")
            def run(request):
                stage.trace_id, stage.deadline = request.trace_id, request.deadline
                stage.started.set()
                try:
                    return host.call(next_name, "run", request.payload, context=request.context)
                except sagebus.Cancelled:
                    stage.cancelled.set()
                    raise

            services.append(s.start(wait=10))

        forward(a, "stage-a", "stage-b")
        forward(b, "stage-b", "stage-c")
        sc = sagebus.Service(host, "stage-c", max_inflight=2)

        @sc.method("run")
        def last(request):
            c.trace_id, c.deadline = request.trace_id, request.deadline
            c.started.set()
            if request.context.cancel.wait(10):
                c.cancelled.set()
            return b"done"

        services.append(sc.start(wait=10))
        future = client.call_async("stage-a", "run", timeout=8)
        assert c.started.wait(5)
        assert len(a.trace_id) == 32 and int(a.trace_id, 16)
        assert b.trace_id == a.trace_id and c.trace_id == a.trace_id
        # One deadline: each stage's is its caller's (on one host, to the microsecond).
        assert abs(b.deadline - a.deadline) < 1e-5 and abs(c.deadline - a.deadline) < 1e-5
        assert 7 < a.deadline - time.monotonic() <= 8
        assert future.cancel()
        for stage in (c, b, a):
            assert stage.cancelled.wait(5)
        for s in services:
            s.stop(drain=1)


def test_a_context_made_in_python_starts_a_chain(broker, client):
    seen = []
    with sagebus.Client(broker.endpoint) as c:
        s = sagebus.Service(c, "traced", max_inflight=4)

        @s.method("id")
        def trace_id(request):
            seen.append((request.trace_id, request.deadline, request.context.deadline))
            return request.trace_id.encode()

        @s.method("hold")
        def hold(request):
            request.context.cancel.wait(10)
            return b""

        s.start(wait=10)
        context = sagebus.CallContext(timeout=5)
        assert len(context.trace_id) == 32 and context.traceparent.startswith("00-")
        assert 4 < context.time_left() <= 5 and not context.cancelled
        # Two calls within it: one trace, its deadline (their own timeout ignored).
        assert client.call("traced", "id", context=context, timeout=60) == \
            context.trace_id.encode()
        assert client.call("traced", "id", context=context) == context.trace_id.encode()
        assert [abs(d - context.deadline) < 1e-5 for _, d, _ in seen] == [True, True]
        assert seen[0][1] == seen[0][2]
        # Its token cancels a call made within it.
        future = client.call_async("traced", "hold", context=context)
        context.cancel.cancel("the chain is off")
        with pytest.raises(sagebus.Cancelled, match="the chain is off"):
            future.result(timeout=5)
        assert context.cancelled
        s.stop(drain=1)


def test_a_context_whose_deadline_passed_and_bad_traceparents_are_refused(broker, client):
    with pytest.raises(sagebus.DeadlineExceeded):
        client.call("anything", "m", context=sagebus.CallContext(deadline=time.monotonic() - 1))
    with pytest.raises(sagebus.DeadlineExceeded):
        client.call_async("anything", "m", context=sagebus.CallContext(
            deadline=time.monotonic() - 1)).result(timeout=5)
    with pytest.raises(sagebus.InvalidArgument):
        client.call("anything", "m", traceparent="00-nonsense")
    with pytest.raises(ValueError, match="traceparent"):
        sagebus.CallContext(traceparent="00-nonsense")
    with pytest.raises(TypeError, match="not both"):
        sagebus.CallContext(timeout=1, deadline=time.monotonic())
    with pytest.raises(TypeError, match="CallContext"):
        client.call("anything", "m", context="soon")
    assert sagebus.CallContext().deadline is None and sagebus.CallContext().time_left() is None


def test_a_callers_traceparent_reaches_the_handlers_trace_id(broker, client):
    with sagebus.Client(broker.endpoint) as c:
        s = sagebus.Service(c, "traced", max_inflight=1)
        s.handle("id", lambda request: request.trace_id.encode())
        s.start(wait=10)
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        assert client.call("traced", "id", traceparent=tp) == b"4bf92f3577b34da6a3ce929d0e0e4736"

        async def main():
            return await client.acall("traced", "id", traceparent=tp)

        assert asyncio.run(main()) == b"4bf92f3577b34da6a3ce929d0e0e4736"
        # Without one, each call starts a trace of its own.
        one, two = client.call("traced", "id"), client.call("traced", "id")
        assert len(one) == 32 and one != two
        s.stop(drain=1)
