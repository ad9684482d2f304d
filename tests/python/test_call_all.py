"""Scatter-gather from Python, as tests/integration/test_call_all.cpp checks it in C++:
call_all asks every live instance and gathers one outcome each, named by the instance's
connection name (an instance killed mid-call UNAVAILABLE, one that does not answer by the
deadline DEADLINE_EXCEEDED), in each form (call_all, call_all_iter with for and async for,
acall_all); no instance is NoResponders; the iterator yields the outcomes as they come;
leaving it early, a CancelToken or Ctrl-C cancels the call."""
import asyncio
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import sagebus

from conftest import python, wait_for_line


# An instance of "memory" named memory-4 in a child process, which holds each call until
# it is killed.
HOLDER = """
    import sys, threading, sagebus
    with sagebus.Client(sys.argv[1], name="memory-4") as c:
        s = sagebus.Service(c, "memory", max_inflight=4)

        @s.method("who")
        def who(request):
            print("holding", flush=True)
            threading.Event().wait(60)  # until it is killed
            return b"memory-4"

        s.start(wait=10)
        print("ready", flush=True)
        threading.Event().wait(60)
"""


class Memories:
    """Instances of service "memory", each on a client of its own named as given. Method
    "who" answers the instance's name, unless the payload (names, comma-separated) names
    the instance: then it holds the call until `release` is set or the call is cancelled
    (noted in .cancelled)."""

    def __init__(self, broker, names):
        self.release = threading.Event()
        self.cancelled = []
        self.entered = {name: threading.Event() for name in names}
        self.clients, self.services = [], []  # (a Service dropped is stopped)
        try:
            for name in names:
                client = sagebus.Client(broker.endpoint, name=name)
                self.clients.append(client)
                service = sagebus.Service(client, "memory", max_inflight=4)
                self.services.append(service)
                service.handle("who", self._who(name))
                service.start(wait=10)
        except BaseException:
            self.close()
            raise

    def _who(self, name):
        def who(request):
            if name in request.payload.decode().split(","):
                self.entered[name].set()
                deadline = time.monotonic() + 20
                while not self.release.wait(0.02) and time.monotonic() < deadline:
                    if request.cancelled:
                        self.cancelled.append(name)
                        break
            return name.encode()
        return who

    def close(self):
        self.release.set()
        for client in self.clients:
            client.close()


@pytest.fixture
def memories(broker):
    m = Memories(broker, ["memory-1", "memory-2", "memory-3"])
    yield m
    m.close()


def by_instance(replies):
    return {r.instance: r for r in replies}


@pytest.mark.parametrize("form", ["call_all", "for", "async for", "acall_all"])
def test_call_all_over_4_instances_with_one_killed_gives_3_replies_and_1_unavailable(
        broker, client, memories, form):
    child = python(HOLDER, broker.endpoint)
    try:
        assert wait_for_line(child, "ready", 20), child.stderr.read1().decode()

        def kill_when_held():
            assert wait_for_line(child, "holding", 10)
            child.kill()

        if form == "call_all":
            with ThreadPoolExecutor(1) as pool:
                killing = pool.submit(kill_when_held)
                result = client.call_all("memory", "who", timeout=20)
                killing.result(10)
            asked, replies = result.asked, result.replies
            assert list(result) == replies and len(result) == 4
        elif form == "acall_all":
            async def main():
                killing = asyncio.get_running_loop().run_in_executor(None, kill_when_held)
                result = await client.acall_all("memory", "who", timeout=20)
                await asyncio.wait_for(killing, 10)
                return result

            result = asyncio.run(main())
            asked, replies = result.asked, result.replies
        else:
            gather = client.call_all_iter("memory", "who", timeout=20)
            replies = []

            def on_reply(reply):
                replies.append(reply)
                assert gather.asked == 4  # known from the first outcome on
                if len(replies) == 3:  # the three that answer; memory-4 holds its call
                    kill_when_held()

            if form == "for":
                for reply in gather:
                    on_reply(reply)
            else:
                async def main():
                    async for reply in gather:
                        on_reply(reply)

                asyncio.run(main())
            asked = gather.asked
        assert asked == 4
        named = by_instance(replies)
        assert sorted(named) == ["memory-1", "memory-2", "memory-3", "memory-4"]
        for name in ("memory-1", "memory-2", "memory-3"):
            assert named[name].ok and named[name].status == sagebus.Status.OK
            assert named[name].payload == name.encode() and named[name].error is None
        lost = named["memory-4"]
        assert lost.status == sagebus.Status.UNAVAILABLE and not lost.ok
        assert isinstance(lost.error, sagebus.Unavailable) and lost.payload == b""
        if form in ("for", "async for"):  # killed once the three had answered
            assert replies[-1] is lost  # in the order they came
    finally:
        child.kill()
        child.communicate(timeout=10)


def test_an_instance_that_does_not_answer_by_the_deadline_gives_deadline_exceeded(
        client, memories):
    started = time.monotonic()
    result = client.call_all("memory", "who", b"memory-2", timeout=0.5)
    assert time.monotonic() - started < 5
    assert result.asked == 3
    named = by_instance(result.replies)
    assert sorted(named) == ["memory-1", "memory-2", "memory-3"]
    assert named["memory-1"].ok and named["memory-3"].ok
    assert named["memory-2"].status == sagebus.Status.DEADLINE_EXCEEDED
    assert isinstance(named["memory-2"].error, sagebus.DeadlineExceeded)


def test_no_instance_is_no_responders(client):
    with pytest.raises(sagebus.NoResponders) as e:
        client.call_all("nobody", "who", timeout=5)
    assert isinstance(e.value, LookupError)
    gather = client.call_all_iter("nobody", "who", timeout=5)
    with pytest.raises(sagebus.NoResponders):
        next(gather)
    with pytest.raises(sagebus.NoResponders):
        asyncio.run(client.acall_all("nobody", "who", timeout=5))


def test_the_iterator_yields_the_outcomes_as_they_come(client, memories):
    # memory-2 and memory-3 hold the call until the first outcome has been read.
    gather = client.call_all_iter("memory", "who", b"memory-2,memory-3", timeout=20)
    first = next(gather)
    assert (first.instance, first.payload) == ("memory-1", b"memory-1")
    assert gather.asked == 3
    assert memories.entered["memory-2"].wait(10) and memories.entered["memory-3"].wait(10)
    memories.release.set()
    rest = list(gather)
    assert sorted(r.instance for r in rest) == ["memory-2", "memory-3"]
    assert all(r.ok for r in rest)
    assert gather.asked == 3


def test_leaving_the_iterator_early_cancels_the_call_on_every_instance(client, memories):
    with client.call_all_iter("memory", "who", b"memory-2,memory-3", timeout=20) as gather:
        assert next(gather).instance == "memory-1"
        assert memories.entered["memory-2"].wait(10) and memories.entered["memory-3"].wait(10)
    with pytest.raises(sagebus.Cancelled):
        next(gather)
    deadline = time.monotonic() + 5
    while sorted(memories.cancelled) != ["memory-2", "memory-3"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(memories.cancelled) == ["memory-2", "memory-3"]


def test_a_cancel_token_cancels_a_call_all(client, memories):
    token = sagebus.CancelToken()
    threading.Timer(0.2, token.cancel, ("the user left",)).start()
    started = time.monotonic()
    with pytest.raises(sagebus.Cancelled, match="the user left"):
        client.call_all("memory", "who", b"memory-1,memory-2,memory-3", timeout=20, cancel=token)
    assert time.monotonic() - started < 5


def test_ctrl_c_interrupts_a_call_all_and_cancels_it(broker, memories):
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, sagebus
        with sagebus.Client(sys.argv[1]) as c:
            assert c.wait_connected(10)
            try:
                c.call_all("memory", "who", b"memory-1,memory-2,memory-3", timeout=60)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
    """), broker.endpoint], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for name in ("memory-1", "memory-2", "memory-3"):
            assert memories.entered[name].wait(20), f"the call never reached {name}"
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=20)
        assert "interrupted" in out, err
        assert time.monotonic() - sent < 5
        deadline = time.monotonic() + 5
        while len(memories.cancelled) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(memories.cancelled) == ["memory-1", "memory-2", "memory-3"]
    finally:
        child.kill()
        child.communicate(timeout=10)


def test_a_client_interceptor_sees_a_call_all(broker, memories):
    seen = []

    class Audit(sagebus.Interceptor):
        def after(self, call, end):
            seen.append((call, end))

    with sagebus.Client(broker.endpoint, interceptors=[Audit()]) as client:
        result = client.call_all("memory", "who", timeout=10)
        assert len(result) == 3
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(seen) == 1
    call, end = seen[0]
    assert (call.service, call.method) == ("memory", "who")
    assert end.ok


def test_a_client_interceptor_sees_call_all_as_one(broker, memories):
    seen = []

    class Audit(sagebus.Interceptor):
        def after(self, call, end):
            seen.append((call, end))

    with sagebus.Client(broker.endpoint, interceptors=[Audit()]) as client:
        client.call_all("memory", "who", timeout=10)
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
    call, end = seen[0]
    assert call.all
    assert end.chunks == 3 and end.reply_bytes == 3 * len("memory-1")


def test_a_service_interceptor_sees_all_on_a_call_all_part_only(broker):
    seen = []

    class Audit(sagebus.Interceptor):
        def before(self, call):
            seen.append((call.method, call.all))

    with sagebus.Client(broker.endpoint, name="memory-9") as served, \
            sagebus.Client(broker.endpoint) as caller:
        service = sagebus.Service(served, "memory", interceptors=[Audit()])
        service.handle("who", lambda request: b"memory-9")
        service.start(wait=10)
        assert len(caller.call_all("memory", "who", timeout=10)) == 1
        assert caller.call("memory", "who", timeout=10) == b"memory-9"
        service.stop()
    assert seen == [("who", True), ("who", False)]


def test_bad_arguments_are_refused(client):
    with pytest.raises(TypeError, match="payload must be bytes"):
        client.call_all("memory", "who", "a str")
    with pytest.raises(sagebus.InvalidArgument):
        client.call_all("bad name!", "who")
    with pytest.raises(TypeError, match="CancelToken"):
        client.call_all("memory", "who", cancel="soon")
