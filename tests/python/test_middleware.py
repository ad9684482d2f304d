"""Middleware from Python, as tests/integration/test_middleware.cpp checks it in C++:
client and service interceptors written in Python see each call before (in order) and
after (in reverse order) and add headers that reach the handler; a refusal ends the call
with its status (a client's sends nothing, a service's keeps the handler from running);
an interceptor that raises does not break its client or service; the ready-made
MetricsInterceptor counts calls per method and its Prometheus text is served by a method,
and LoggingInterceptor writes one line per call; interceptors live as long as their
client."""
import asyncio
import contextlib
import gc
import json
import re
import sys
import threading
import weakref

import pytest

import sagebus

from conftest import eventually


class Recorder(sagebus.Interceptor):
    """Appends ("before", name, service.method, headers it was given) and ("after", name,
    status) to `log`, keeps each after()'s (call, end) in .ends, adds the header x-<name>,
    and raises `refuse` (a sagebus.Error) in before() when given one."""

    def __init__(self, name, log, refuse=None):
        self.name = name
        self.log = log
        self.refuse = refuse
        self.befores = []
        self.ends = []

    def before(self, call):
        self.befores.append(call)
        self.log.append(("before", self.name, f"{call.service}.{call.method}", dict(call.headers)))
        call.headers["x-" + self.name] = "seen"
        if self.refuse is not None:
            raise self.refuse

    def after(self, call, end):
        self.ends.append((call, end))
        self.log.append(("after", self.name, end.status))


def steps(log):
    """The log without the headers: (step, name) and (step, name, status)."""
    return [entry[:2] if entry[0] == "before" else entry for entry in log]


@pytest.fixture
def memory(broker):
    """Service "memory" on its own client, with the service interceptors s1 and s2: "headers"
    answers its request's headers as JSON, "echo" its payload, "fail" raises ValueError,
    "count" streams as many chunks as its payload says. .log, .s1, .s2, .handled (calls
    its handlers ran)."""

    class Memory:
        log = []
        handled = []

    m = Memory()
    m.s1, m.s2 = Recorder("s1", m.log), Recorder("s2", m.log)
    with sagebus.Client(broker.endpoint, name="memory-1") as c:
        service = sagebus.Service(c, "memory", interceptors=[m.s1, m.s2])

        @service.method("headers")
        def headers(request):
            m.handled.append(request.method)
            return json.dumps(request.headers, sort_keys=True).encode()

        @service.method("echo")
        def echo(request):
            m.handled.append(request.method)
            return request.payload

        @service.method("fail")
        def fail(request):
            m.handled.append(request.method)
            raise ValueError("no such memory")

        @service.method("count")
        def count(request):
            m.handled.append(request.method)
            for i in range(int(request.payload)):
                yield b"chunk-%d" % i

        service.start(wait=10)
        m.service = service
        yield m
        service.stop()


def test_interceptors_see_each_call_before_and_after_in_order_and_add_headers(broker, memory):
    log = []
    c1, c2 = Recorder("c1", log), Recorder("c2", log)
    with sagebus.Client(broker.endpoint, interceptors=[c1, c2]) as client:
        reply = client.call("memory", "headers", b"abc", headers={"h": "v"}, timeout=10)
        # Every header reaches the handler: the caller's, both client interceptors' and
        # both service interceptors'.
        assert json.loads(reply) == {"h": "v", "x-c1": "seen", "x-c2": "seen",
                                     "x-s1": "seen", "x-s2": "seen"}
        # A synchronous call's after()s have run when call() returns, and the service's
        # before its reply was sent.
        assert steps(log) == [("before", "c1"), ("before", "c2"),
                              ("after", "c2", sagebus.Status.OK),
                              ("after", "c1", sagebus.Status.OK)]
        assert steps(memory.log) == [("before", "s1"), ("before", "s2"),
                                     ("after", "s2", sagebus.Status.OK),
                                     ("after", "s1", sagebus.Status.OK)]
        # Each before() sees the headers of those before it.
        assert log[0][3] == {"h": "v"}
        assert log[1][3] == {"h": "v", "x-c1": "seen"}
        assert memory.log[0][3] == {"h": "v", "x-c1": "seen", "x-c2": "seen"}
        assert memory.log[1][3] == {"h": "v", "x-c1": "seen", "x-c2": "seen", "x-s1": "seen"}

        call, end = c1.ends[0]
        assert (call.service, call.method, call.payload_bytes) == ("memory", "headers", 3)
        assert (call.stream, call.all) == (False, False)
        assert re.fullmatch("[0-9a-f]{32}", call.trace_id)
        assert call.headers == {"h": "v", "x-c1": "seen", "x-c2": "seen"}  # as sent
        assert isinstance(end.status, sagebus.Status) and end.ok
        assert (end.message, end.reply_bytes, end.chunks) == ("", len(reply), 0)
        assert isinstance(end.duration, float) and 0 < end.duration < 10
        # The service's side: the same call and trace.
        scall, send = memory.s2.ends[0]
        assert (scall.service, scall.method, scall.payload_bytes) == ("memory", "headers", 3)
        assert scall.trace_id == call.trace_id
        assert send.ok and send.reply_bytes == len(reply)
        assert 0 < send.duration <= end.duration


def test_each_form_of_call_goes_through_the_interceptors(broker, memory):
    log = []
    c1 = Recorder("c1", log)
    with sagebus.Client(broker.endpoint, interceptors=[c1]) as client:
        assert client.call_async("memory", "echo", b"async").result(10) == b"async"
        assert asyncio.run(client.acall("memory", "echo", b"acall", timeout=10)) == b"acall"
        assert list(client.stream("memory", "count", b"3", timeout=10)) == \
            [b"chunk-0", b"chunk-1", b"chunk-2"]
        with pytest.raises(sagebus.HandlerError):
            client.call("memory", "fail", timeout=10)
        # Other forms' after() run on the client's interceptor thread, soon after.
        assert eventually(lambda: len(c1.ends) == 4)
        ends = {call.method + ("-stream" if call.stream else ""): end for call, end in c1.ends}
        assert [(c.payload_bytes, e.status, e.reply_bytes) for c, e in c1.ends
                if c.method == "echo"] == [(5, sagebus.Status.OK, 5)] * 2
        assert ends["count-stream"].ok
        assert (ends["count-stream"].chunks, ends["count-stream"].reply_bytes) == (3, 21)
        assert ends["fail"].status == sagebus.Status.HANDLER_ERROR
        assert ends["fail"].message == "ValueError: no such memory"
    # The service saw the stream as one too.
    stream_ends = [(c, e) for c, e in memory.s1.ends if c.stream]
    assert len(stream_ends) == 1 and stream_ends[0][1].chunks == 3


def test_a_client_interceptors_refusal_ends_the_call_with_its_status_and_sends_nothing(
        broker, memory):
    log = []
    c1 = Recorder("c1", log)
    guard = Recorder("guard", log, refuse=sagebus.PermissionDenied("not you"))
    with sagebus.Client(broker.endpoint, interceptors=[c1, guard]) as client:
        with pytest.raises(sagebus.PermissionDenied) as e:
            client.call("memory", "echo", b"x", timeout=10)
        assert e.value.message == "not you"
        # The refusing interceptor and those before it see its outcome.
        assert steps(log) == [("before", "c1"), ("before", "guard"),
                              ("after", "guard", sagebus.Status.PERMISSION_DENIED),
                              ("after", "c1", sagebus.Status.PERMISSION_DENIED)]
        assert c1.ends[0][1].message == "not you"
        # Every form refuses the same way.
        with pytest.raises(sagebus.PermissionDenied, match="not you"):
            client.call_async("memory", "echo", b"x").result(10)
        with pytest.raises(sagebus.PermissionDenied, match="not you"):
            asyncio.run(client.acall("memory", "echo", b"x"))
        with pytest.raises(sagebus.PermissionDenied, match="not you"):
            list(client.stream("memory", "count", b"3"))
        with pytest.raises(sagebus.PermissionDenied, match="not you"):
            client.call_all("memory", "echo", b"x", timeout=10)
        assert eventually(lambda: len(c1.ends) == 5)
        # Nothing was sent: the service saw none of them.
        assert memory.log == [] and memory.handled == []
        assert memory.service.served == 0


def test_a_service_interceptors_refusal_reaches_the_caller_and_the_handler_does_not_run(
        broker, client):
    log, handled = [], []
    s1 = Recorder("s1", log)
    guard = Recorder("guard", log, refuse=sagebus.Unauthenticated("who are you"))
    with sagebus.Client(broker.endpoint) as c:
        service = sagebus.Service(c, "vault", interceptors=[s1, guard])
        service.handle("open", lambda request: handled.append(1) or b"opened")
        service.start(wait=10)
        with pytest.raises(sagebus.Unauthenticated) as e:
            client.call("vault", "open", timeout=10)
        assert e.value.message == "who are you"
        assert handled == []
        assert steps(log) == [("before", "s1"), ("before", "guard"),
                              ("after", "guard", sagebus.Status.UNAUTHENTICATED),
                              ("after", "s1", sagebus.Status.UNAUTHENTICATED)]
        service.stop()


class Faulty(sagebus.Interceptor):
    """Misbehaves as the call's header "fault" says: "before" raises ValueError in
    before(), "after" in after(), "returns" returns something from before(), "headers"
    leaves a header that is not a str."""

    def __init__(self):
        self.afters = 0

    def before(self, call):
        fault = call.headers.get("fault")
        if fault == "before":
            raise ValueError("before went wrong")
        if fault == "returns":
            return sagebus.PermissionDenied("returned, not raised")
        if fault == "headers":
            call.headers["n"] = 1

    def after(self, call, end):
        self.afters += 1
        if call.headers.get("fault") == "after":
            raise ValueError("after went wrong")


@contextlib.contextmanager
def reported():
    """What reaches sys.unraisablehook within: [(exception, where)]. (Set in the test's
    body: pytest sets its own hook around it.)"""
    seen = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append((u.exc_value, u.err_msg or str(u.object)))
    try:
        yield seen
    finally:
        sys.unraisablehook = hook


def test_an_interceptor_that_raises_does_not_break_its_client(broker, memory):
    faulty = Faulty()
    with sagebus.Client(broker.endpoint, interceptors=[faulty]) as client, \
            reported() as unraisable:
        # What before() raises, other than a sagebus.Error, is the caller's: nothing is sent.
        with pytest.raises(ValueError, match="before went wrong"):
            client.call("memory", "echo", b"x", headers={"fault": "before"}, timeout=10)
        with pytest.raises(ValueError, match="before went wrong"):
            client.call_async("memory", "echo", b"x", headers={"fault": "before"})
        with pytest.raises(TypeError, match="returns None"):
            client.call("memory", "echo", b"x", headers={"fault": "returns"}, timeout=10)
        with pytest.raises(TypeError, match="not str"):
            client.call("memory", "echo", b"x", headers={"fault": "headers"}, timeout=10)
        assert memory.handled == []
        # What after() raises is reported, and the call keeps its outcome.
        assert client.call("memory", "echo", b"x", headers={"fault": "after"}, timeout=10) == b"x"
        assert len(unraisable) == 1
        assert isinstance(unraisable[0][0], ValueError)
        assert "Faulty" in unraisable[0][1]
        future = client.call_async("memory", "echo", b"y", headers={"fault": "after"})
        assert future.result(10) == b"y"
        assert eventually(lambda: len(unraisable) == 2)  # on the interceptor thread
        # The client goes on.
        assert client.call("memory", "echo", b"fine", timeout=10) == b"fine"
        assert client.call_async("memory", "echo", b"fine").result(10) == b"fine"
        assert eventually(lambda: faulty.afters == 4)


def test_a_service_interceptor_that_raises_fails_the_call_not_the_service(broker, client):
    with sagebus.Client(broker.endpoint) as c, reported() as unraisable:
        service = sagebus.Service(c, "faulty", interceptors=[Faulty()])
        handled = []
        service.handle("echo", lambda request: handled.append(1) or request.payload)
        service.start(wait=10)
        with pytest.raises(sagebus.HandlerError) as e:
            client.call("faulty", "echo", b"x", headers={"fault": "before"}, timeout=10)
        assert e.value.remote_type == "ValueError"
        assert "before went wrong" in e.value.message and "Faulty.before" in e.value.message
        with pytest.raises(sagebus.HandlerError, match="TypeError"):
            client.call("faulty", "echo", b"x", headers={"fault": "headers"}, timeout=10)
        assert handled == []
        assert client.call("faulty", "echo", b"x", headers={"fault": "after"}, timeout=10) == b"x"
        assert len(unraisable) == 1 and isinstance(unraisable[0][0], ValueError)
        assert client.call("faulty", "echo", b"ok", timeout=10) == b"ok"
        service.stop()


def test_the_metrics_interceptor_counts_calls_per_method_and_serves_its_prometheus_text(
        broker):
    served = sagebus.MetricsInterceptor()
    calling = sagebus.MetricsInterceptor()
    with sagebus.Client(broker.endpoint) as c:
        service = sagebus.Service(c, "memory", interceptors=[served])
        service.handle("echo", lambda request: request.payload)

        @service.method("fail")
        def fail(request):
            raise ValueError("no")

        service.handle("metrics", served.handler)  # in C++
        served.expose(service, "metrics2")
        service.start(wait=10)
        with sagebus.Client(broker.endpoint, interceptors=[calling]) as client:
            for _ in range(3):
                assert client.call("memory", "echo", b"hi", timeout=10) == b"hi"
            with pytest.raises(sagebus.HandlerError):
                client.call("memory", "fail", timeout=10)
            text = client.call("memory", "metrics", timeout=10).decode()
            assert client.call("memory", "metrics2", timeout=10).decode().startswith("# HELP")
        for snapshot in (served.snapshot(), calling.snapshot()):
            echo = snapshot["memory.echo"]
            assert echo["count"] == 3
            assert echo["statuses"] == {sagebus.Status.OK: 3}
            assert sum(echo["buckets"].values()) == 3
            assert list(echo["buckets"]) == list(sagebus.MetricsInterceptor.BUCKETS)
            assert 0 < echo["seconds"] < 30
            assert snapshot["memory.fail"]["statuses"] == {sagebus.Status.HANDLER_ERROR: 1}
        assert calling.snapshot()["memory.metrics"]["count"] == 1
        assert 'sagebus_calls_total{service="memory",method="echo",status="OK"} 3' in text
        assert 'sagebus_calls_total{service="memory",method="fail",status="HANDLER_ERROR"} 1' \
            in text
        assert 'sagebus_call_duration_seconds_count{service="memory",method="echo"} 3' in text
        assert 'sagebus_call_duration_seconds_bucket{service="memory",method="echo",le="+Inf"} 3' \
            in text
        service.stop()


LINE = re.compile(r"(\S+) memory\.(\w+) (\d+) B -> (\w+)(?: \((.*)\))? (\d+) B "
                  r"(?:in \d+ chunks )?in [0-9.]+ ms trace ([0-9a-f]{32})")


def test_the_logging_interceptor_writes_a_line_per_call_to_its_sink(broker, memory):
    lines = []
    logging = sagebus.LoggingInterceptor("caller", sink=lines.append)
    with sagebus.Client(broker.endpoint, interceptors=[logging]) as client:
        assert client.call("memory", "echo", b"hello", timeout=10) == b"hello"
        assert len(lines) == 1  # a synchronous call's line is there when it returns
        with pytest.raises(sagebus.HandlerError):
            client.call("memory", "fail", timeout=10)
        assert client.call_async("memory", "echo", b"later").result(10) == b"later"
        assert list(client.stream("memory", "count", b"2", timeout=10)) == [b"chunk-0", b"chunk-1"]
        assert eventually(lambda: len(lines) == 4)
    found = [LINE.fullmatch(line) for line in lines]
    assert all(found), lines
    assert [m.group(1, 2, 3, 4, 6) for m in found[:3]] == [
        ("caller", "echo", "5", "OK", "5"),
        ("caller", "fail", "0", "HANDLER_ERROR", "0"),
        ("caller", "echo", "5", "OK", "5")]
    assert found[1].group(5) == "ValueError: no such memory"
    assert "in 2 chunks" in lines[3]
    # A service's, on its worker threads: one line per call it served.
    served = []
    with sagebus.Client(broker.endpoint) as c:
        service = sagebus.Service(
            c, "logged", interceptors=[sagebus.LoggingInterceptor("svc", sink=served.append)])
        service.handle("echo", lambda request: request.payload)
        service.start(wait=10)
        with sagebus.Client(broker.endpoint) as client:
            for _ in range(3):
                client.call("logged", "echo", b"abc", timeout=10)
        assert len(served) == 3
        assert all(line.startswith("svc logged.echo 3 B -> OK 3 B in ") for line in served)
        service.stop()


def test_the_logging_interceptor_writes_to_standard_error_by_default(broker, memory, capfd):
    with sagebus.Client(broker.endpoint, interceptors=[sagebus.LoggingInterceptor()]) as client:
        client.call("memory", "echo", b"to stderr", timeout=10)
    err = capfd.readouterr().err
    assert re.search(r"^sagebus memory\.echo 9 B -> OK 9 B in [0-9.]+ ms trace [0-9a-f]{32}$",
                     err, re.M), err


def test_interceptors_live_as_long_as_their_client(broker, memory):
    log = []
    client = sagebus.Client(broker.endpoint, interceptors=[Recorder("kept", log)])
    gc.collect()
    assert client.call("memory", "echo", b"x", timeout=10) == b"x"
    assert steps(log) == [("before", "kept"), ("after", "kept", sagebus.Status.OK)]
    alive = weakref.ref(client.interceptors[0])
    client.close()
    del client
    gc.collect()
    assert alive() is None


def test_an_after_running_late_may_close_its_client(broker, memory):
    closed = threading.Event()

    class Closer(sagebus.Interceptor):
        def after(self, call, end):
            client.close()  # on the interceptor thread: takes effect once it returns
            closed.set()

    client = sagebus.Client(broker.endpoint, interceptors=[Closer()])
    assert client.call_async("memory", "echo", b"x").result(10) == b"x"
    assert closed.wait(10)
    assert eventually(lambda: client.closed)
    with pytest.raises(sagebus.Cancelled):
        client.call("memory", "echo", b"x")


def test_bad_interceptors_are_refused(broker):
    with pytest.raises(TypeError, match="list"):
        sagebus.Client(broker.endpoint, interceptors=Recorder("one", []))
    with pytest.raises(TypeError, match="before"):
        sagebus.Client(broker.endpoint, interceptors=[object()])
    with sagebus.Client(broker.endpoint) as c:
        with pytest.raises(TypeError, match="before"):
            sagebus.Service(c, "s", interceptors=[42])
    with pytest.raises(TypeError, match="sink"):
        sagebus.LoggingInterceptor(sink="stderr")
