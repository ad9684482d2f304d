"""sage-bus's Python client: the C++ SDK (libsagebus), in Python's idiom.

A caller::

    import sagebus
    with sagebus.Client("tcp://127.0.0.1:5555") as client:
        reply = client.call("echo", "say", b"hello", timeout=2.0)

A service::

    with sagebus.Client("tcp://127.0.0.1:5555") as client:
        echo = sagebus.Service(client, "echo")

        @echo.method("say")
        def say(request):
            return request.payload

        echo.run()  # serves until Ctrl-C (or echo.start() and go on)

A stream (a generator as the handler; client.stream() on the caller's side)::

    @service.method("generate")
    def generate(request):
        yield from model_tokens(request.payload)

    for chunk in client.stream("llm", "generate", b"prompt", timeout=60):  # or async for
        ...

Calls and streams are cancelled by future.cancel(), a cancelled asyncio task, leaving a
loop over a stream, or a CancelToken (cancel=); a handler's calls made with
context=request.context share its deadline, trace and cancellation.

Middleware: Client(..., interceptors=[...]) and Service(..., interceptors=[...]) take
sagebus.Interceptor objects (before(call), after(call, end)), LoggingInterceptor and
MetricsInterceptor. Scatter-gather: client.call_all(service, method, payload) asks every
live instance and returns each one's named outcome (call_all_iter() as they come).

Times are seconds, as floats. Every failure is a sagebus.Error subclass named for its
status (DeadlineExceeded is also a TimeoutError, NoResponders a LookupError, ...),
with .status and .message. Blocking calls release the GIL and wake every 100 ms for
signals, so Ctrl-C interrupts them. No Python code runs on the client's I/O thread:
callbacks run on its callback thread, subscription handlers on their subscription's
thread, service handlers on the service's worker threads (or, for `async def`
handlers, on the service's event loop). A Client is shared by any number of threads;
after fork() a child must make its own. See docs/python.md.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import enum
import inspect
import json
import os
import queue
import threading
import time
import weakref
from typing import Any, AsyncIterator, Callable, Dict, Iterator, Mapping, NamedTuple, Optional

from . import _native

__all__ = [
    "Client", "Service", "Request", "Message", "Subscription", "Stream", "CancelToken",
    "CallContext", "Interceptor", "CallInfo", "CallEnd", "LoggingInterceptor",
    "MetricsInterceptor", "Gather", "GatherResult", "InstanceReply",
    "LegacyQueue", "QueueItem", "Status", "Strategy", "Error", "NoResponders",
    "Unavailable", "DeadlineExceeded", "Overloaded", "Undeliverable", "InvalidArgument",
    "NotFound", "HandlerError", "PermissionDenied", "Cancelled", "Internal", "Unauthenticated",
    "JsonCodec", "PickleCodec", "call_service", "call_service_async", "default_client",
]

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


class Status(enum.IntEnum):
    """The outcome of a call, as the wire and busctl number and name it."""

    OK = 0
    NO_RESPONDERS = 1
    UNAVAILABLE = 2
    DEADLINE_EXCEEDED = 3
    OVERLOADED = 4
    UNDELIVERABLE = 5
    INVALID_ARGUMENT = 6
    NOT_FOUND = 7
    HANDLER_ERROR = 8
    PERMISSION_DENIED = 9
    CANCELLED = 10
    INTERNAL = 11
    UNAUTHENTICATED = 12


class Strategy(enum.IntEnum):
    """How the broker picks an instance of a service for each call."""

    LEAST_OUTSTANDING = 0
    ROUND_ROBIN = 1
    CONSISTENT_HASH = 2


# --- errors -----------------------------------------------------------------------------


class Error(Exception):
    """A sage-bus call, publish, send or queue operation that did not succeed.

    .status is a Status, .message says why in words; str() is "STATUS: message".
    """

    status: Status = Status.INTERNAL

    def __init__(self, message: str = "", status: Optional[Status] = None):
        if status is not None:
            self.status = Status(status)
        self.message = message
        super().__init__(f"{self.status.name}: {message}")


class NoResponders(Error, LookupError):
    """The service has no live instance."""
    status = Status.NO_RESPONDERS


class Unavailable(Error, ConnectionError):
    """The broker is unreachable, or the instance was lost mid-call."""
    status = Status.UNAVAILABLE


class DeadlineExceeded(Error, TimeoutError):
    """The call's timeout passed before its reply."""
    status = Status.DEADLINE_EXCEEDED


class Overloaded(Error):
    """A bounded queue (in the broker or this client) is full; try again later."""
    status = Status.OVERLOADED


class Undeliverable(Error):
    """Point-to-point: no connected peer took the message."""
    status = Status.UNDELIVERABLE


class InvalidArgument(Error, ValueError):
    """A bad name, payload or option; or a client used after fork()."""
    status = Status.INVALID_ARGUMENT


class NotFound(Error, LookupError):
    """The service has no such method."""
    status = Status.NOT_FOUND


class HandlerError(Error):
    """The service's handler raised. .remote_type names the exception's type when the
    handler was Python ("ValueError"), else None; .message carries its text."""
    status = Status.HANDLER_ERROR

    def __init__(self, message: str = "", status: Optional[Status] = None):
        super().__init__(message, status)
        head, sep, _ = message.partition(": ")
        self.remote_type = head if sep and head.isidentifier() else None


class PermissionDenied(Error, PermissionError):
    """The broker's rules do not allow it (or the name is reserved or taken)."""
    status = Status.PERMISSION_DENIED


class Cancelled(Error):
    """The call or stream was cancelled (its CancelToken or context, future.cancel(), a
    cancelled asyncio task, stream.cancel()), or the client, service or queue was closed
    while the operation waited."""
    status = Status.CANCELLED


class Internal(Error):
    """A bug in sage-bus: please report it."""
    status = Status.INTERNAL


class Unauthenticated(Error):
    """The broker refused this client's key, or its own key is not the one expected."""
    status = Status.UNAUTHENTICATED


_ERRORS = {cls.status: cls for cls in (
    NoResponders, Unavailable, DeadlineExceeded, Overloaded, Undeliverable, InvalidArgument,
    NotFound, HandlerError, PermissionDenied, Cancelled, Internal, Unauthenticated)}


def _error_for(status: int, message: str) -> Error:
    """The exception for a failed outcome (the native module raises through this)."""
    try:
        cls = _ERRORS.get(Status(status), Error)
        return cls(message, Status(status))
    except ValueError:  # a status newer than this package
        return Error(f"status {status}: {message}", Status.INTERNAL)


def _handler_failure(exc: BaseException) -> tuple:
    """What a handler's exception tells the caller: a sagebus.Error keeps its status and
    message; anything else is HANDLER_ERROR "Type: message"."""
    if isinstance(exc, Error):
        return int(exc.status), exc.message
    text = str(exc)
    name = type(exc).__name__
    return int(Status.HANDLER_ERROR), f"{name}: {text}" if text else name


def _status_of(status: int) -> Status:
    """status as a Status; INTERNAL for a status newer than this package."""
    try:
        return Status(status)
    except ValueError:
        return Status.INTERNAL


def _raise_if_failed(status: int, message: str) -> None:
    if status != Status.OK:
        raise _error_for(status, message)


# --- cancellation and call context ------------------------------------------------------

CancelToken = _native.CancelToken
CancelToken.__module__ = __name__
CancelToken.__doc__ = """Gives up calls and streams: CancelToken(); token.cancel(why="...");
    token.cancelled; token.why; token.child(); token.wait(timeout=None) -> bool.

    A call or stream made with cancel=token ends Cancelled at once when the token is
    cancelled, and the broker tells the instance running it (its handler sees
    request.cancelled; a streaming handler's generator gets Cancelled at its next chunk).
    Copies share one token; a child is cancelled with its parent, or on its own."""

CallContext = _native.CallContext
CallContext.__module__ = __name__
CallContext.__doc__ = """What a chain of calls shares: one deadline, one trace, one cancellation.

    A handler gets its request's as request.context; a call made with context=ctx ends no
    later than ctx.deadline (its own timeout is ignored when the context has one), carries
    ctx's trace id, and is cancelled with ctx.cancel. CallContext(*, timeout=None,
    deadline=None, traceparent="", cancel=None) starts a chain: deadline in
    time.monotonic() seconds (or timeout from now; neither: none), a W3C traceparent (empty:
    a new trace), a CancelToken (None: a new one). .deadline (None: none), .time_left(),
    .traceparent, .trace_id, .cancel, .cancelled."""


def _check_cancel(cancel: Optional["CancelToken"], context: Optional["CallContext"]) -> None:
    if cancel is not None and not isinstance(cancel, CancelToken):
        raise TypeError(f"cancel must be a sagebus.CancelToken, not {type(cancel).__name__}")
    if context is not None and not isinstance(context, CallContext):
        raise TypeError(f"context must be a sagebus.CallContext, not {type(context).__name__}")


class _CallFuture(concurrent.futures.Future):
    """A call's concurrent.futures.Future: cancel() cancels the call itself (the broker
    tells its instance) unless it has ended. It stays PENDING until the outcome comes
    (running() is False), so that Future.cancel() can succeed meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self._cancel_call: Optional[Callable[[], None]] = None

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        if self._cancel_call is not None:
            self._cancel_call()
        return True

    def _settle(self, status: int, message: str, reply: Any) -> None:
        try:
            if status == Status.OK:
                self.set_result(reply)
            else:
                self.set_exception(_error_for(status, message))
        except concurrent.futures.InvalidStateError:  # cancelled meanwhile
            pass


# --- middleware -------------------------------------------------------------------------


class CallInfo:
    """A call as an interceptor sees it: .service, .method, .headers (a dict: what it holds
    when before() returns goes with the call), .payload_bytes, .stream (a streamed reply),
    .all (a call_all), .trace_id (the call's W3C trace id, 32 hex digits, or "")."""

    __slots__ = ("service", "method", "headers", "payload_bytes", "stream", "all", "trace_id")

    def __init__(self, service: str, method: str, headers: Dict[str, str], payload_bytes: int,
                 stream: bool = False, all: bool = False, trace_id: str = ""):
        self.service = service
        self.method = method
        self.headers = headers
        self.payload_bytes = payload_bytes
        self.stream = stream
        self.all = all
        self.trace_id = trace_id

    def __repr__(self) -> str:
        kind = " stream" if self.stream else " all" if self.all else ""
        return f"<sagebus.CallInfo {self.service}.{self.method}{kind} {self.payload_bytes} B>"


class CallEnd:
    """A call's outcome as after() sees it: .status (a Status), .message (why, when not
    OK), .reply_bytes (the reply's payload, or all the chunks' together), .chunks (a
    stream's chunks; a call_all's outcomes), .duration (seconds, from before() to the
    outcome); .ok."""

    __slots__ = ("status", "message", "reply_bytes", "chunks", "duration")

    def __init__(self, status: int, message: str = "", reply_bytes: int = 0, chunks: int = 0,
                 duration: float = 0.0):
        self.status = _status_of(status)
        self.message = message
        self.reply_bytes = reply_bytes
        self.chunks = chunks
        self.duration = duration

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def __repr__(self) -> str:
        why = f" ({self.message})" if self.message else ""
        return (f"<sagebus.CallEnd {self.status.name}{why} {self.reply_bytes} B "
                f"in {self.duration * 1000:.3f} ms>")


class Interceptor:
    """Middleware around calls: pass instances as Client(..., interceptors=[...]) to see
    each call the client makes, or Service(..., interceptors=[...]) each call it serves.

    before(call) runs before the call is sent (client) or its handler runs (service), in
    the order the interceptors were given; it may change call.headers (a client's reach
    the service; a service's reach its handler), and refuses the call by raising a
    sagebus.Error: the call then ends with that status and message, and nothing is sent
    (client) or run (service). after(call, end) runs once the call has its outcome, in the
    reverse order, for each interceptor whose before() ran (the refusing one included).
    Override either or both; interceptors are shared by every thread that calls or serves.
    See docs/python.md, "Middleware", for the threads they run on and what their other
    exceptions do.
    """

    def before(self, call: CallInfo) -> None:
        """Before the call: may change call.headers; raise a sagebus.Error to refuse it."""

    def after(self, call: CallInfo, end: CallEnd) -> None:
        """Once the call has its outcome (end). What it raises is reported
        (sys.unraisablehook), and changes nothing."""


class LoggingInterceptor(Interceptor):
    """An interceptor (client's or service's) that writes one line per call, as the C++
    SDK's does:

        <label> memory.retrieve 120 B -> OK 456 B in 1.234 ms trace 4bf92f3577b34da6...

    sink: a callable given each line (a str), called as after() is; None writes to the
    process's standard error (file descriptor 2) without Python."""

    def __init__(self, label: str = "sagebus", sink: Optional[Callable[[str], Any]] = None):
        if sink is not None and not callable(sink):
            raise TypeError(f"sink must be callable or None, not {type(sink).__name__}")
        self.label = str(label)
        self.sink = sink
        self._native = _native.LoggingInterceptor(self.label, sink)

    def __repr__(self) -> str:
        return f"<sagebus.LoggingInterceptor {self.label!r}>"


class MetricsInterceptor(Interceptor):
    """An interceptor (client's or service's) that keeps, per service and method, a latency
    histogram and a count per outcome status, in C++ (no Python runs per call).

    snapshot() returns them; prometheus() shows them in the Prometheus text format;
    `service.handle("metrics", metrics.handler)` (or `metrics.expose(service)`) serves that
    text as a method of a service, in C++ too (`busctl call memory metrics`)."""

    #: Upper bounds of the histogram's buckets, in seconds; the last is +Inf.
    BUCKETS = tuple(_native.METRICS_BUCKETS) + (float("inf"),)

    def __init__(self) -> None:
        self._native = _native.MetricsInterceptor()

    def snapshot(self) -> Dict[str, Dict[str, Any]]:
        """{"service.method": {"count": calls, "seconds": their durations' sum, "buckets":
        {upper bound: calls} (not cumulative; BUCKETS's bounds), "statuses": {Status:
        calls}}}, now."""
        out = {}
        for key, (buckets, count, seconds, statuses) in self._native.snapshot().items():
            out[key] = {
                "count": count,
                "seconds": seconds,
                "buckets": dict(zip(self.BUCKETS, buckets)),
                "statuses": {_status_of(status): n for status, n in statuses.items()},
            }
        return out

    def prometheus(self) -> str:
        """The figures in the Prometheus text format: the histogram
        sagebus_call_duration_seconds and the counter sagebus_calls_total, labelled
        service, method (and status)."""
        return self._native.prometheus()

    def handler(self, request: "Request") -> bytes:
        """A handler answering prometheus(): `service.handle("metrics", metrics.handler)`
        serves it in C++, without the GIL."""
        return self.prometheus().encode()

    def expose(self, service: "Service", method: str = "metrics") -> None:
        """service.handle(method, self.handler)."""
        service.handle(method, self.handler)

    def __repr__(self) -> str:
        return "<sagebus.MetricsInterceptor>"


def _hook(interceptor: Any, name: str) -> Optional[Callable]:
    """interceptor's before or after, or None when it has none or keeps Interceptor's."""
    fn = getattr(interceptor, name, None)
    if fn is None:
        return None
    if not callable(fn):
        raise TypeError(f"{type(interceptor).__name__}.{name} is not callable")
    if getattr(fn, "__func__", None) is getattr(Interceptor, name):
        return None
    return fn


def _native_interceptors(interceptors: Any, what: str) -> list:
    """What the native Client and Service take as interceptors=: the ready-made ones'
    native objects, and (before, after, name) for the others."""
    if interceptors is None:
        return []
    if isinstance(interceptors, (Interceptor, str, bytes)) or not hasattr(interceptors, "__iter__"):
        raise TypeError(f"{what} takes interceptors as a list, not {type(interceptors).__name__}")
    out = []
    for interceptor in interceptors:
        if isinstance(interceptor, (LoggingInterceptor, MetricsInterceptor)):
            out.append(interceptor._native)
            continue
        before, after = _hook(interceptor, "before"), _hook(interceptor, "after")
        if before is None and after is None and not isinstance(interceptor, Interceptor):
            raise TypeError(f"{what}: an interceptor has before(call) and/or after(call, end) "
                            f"(a sagebus.Interceptor), not {type(interceptor).__name__}")
        out.append((before, after, type(interceptor).__name__))
    return out


def _interceptor_refusal(exc: BaseException, name: str, service: bool) -> Optional[tuple]:
    """(status, message) of the refusal an interceptor's before() raised: a sagebus.Error's
    own; anything else, for a service's, HANDLER_ERROR naming it (the native module calls
    this). None: a client's unexpected exception, which is the caller's."""
    if isinstance(exc, Error):
        status = exc.status if exc.status != Status.OK else Status.INTERNAL
        return int(status), exc.message
    if not service:
        return None
    status, text = _handler_failure(exc)
    return status, f"{text} (raised by the interceptor {name}.before)"


# --- codecs -----------------------------------------------------------------------------


class JsonCodec:
    """call_service's default encoding: arguments as {"args": [...], "kwargs": {...}},
    results as JSON, in UTF-8."""

    def encode_call(self, args: tuple, kwargs: dict) -> bytes:
        return json.dumps({"args": list(args), "kwargs": kwargs}).encode()

    def decode_call(self, payload: bytes) -> tuple:
        if not payload:
            return (), {}
        call = json.loads(payload)
        if not isinstance(call, dict) or not isinstance(call.get("args", []), list) \
                or not isinstance(call.get("kwargs", {}), dict):
            raise InvalidArgument('a call is {"args": [...], "kwargs": {...}}')
        return tuple(call.get("args", [])), call.get("kwargs", {})

    def encode_result(self, value: Any) -> bytes:
        return json.dumps(value).encode()

    def decode_result(self, payload: bytes) -> Any:
        return json.loads(payload) if payload else None


class PickleCodec(JsonCodec):
    """pickle instead of JSON. Unpickling runs code the sender chose: use it only between
    services that trust each other completely, and only by choice."""

    def __init__(self) -> None:
        import pickle
        self._pickle = pickle

    def encode_call(self, args: tuple, kwargs: dict) -> bytes:
        return self._pickle.dumps((args, kwargs))

    def decode_call(self, payload: bytes) -> tuple:
        args, kwargs = self._pickle.loads(payload)
        return tuple(args), dict(kwargs)

    def encode_result(self, value: Any) -> bytes:
        return self._pickle.dumps(value)

    def decode_result(self, payload: bytes) -> Any:
        return self._pickle.loads(payload)


# --- messages ---------------------------------------------------------------------------


class Message:
    """A published event (.topic) or a point-to-point message (.sender), and its .payload
    (bytes). .missed_before: events the subscription missed just before this one."""

    __slots__ = ("topic", "sender", "payload", "missed_before")

    def __init__(self, payload: bytes, topic: str = "", sender: str = "", missed_before: int = 0):
        self.payload = payload
        self.topic = topic
        self.sender = sender
        self.missed_before = missed_before

    def __repr__(self) -> str:
        where = f"topic={self.topic!r}" if self.topic else f"sender={self.sender!r}"
        return f"Message({where}, payload={self.payload!r})"


# --- the client -------------------------------------------------------------------------

_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


def _check_options(options: Mapping[str, Any], allowed: set, what: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"{what} got unknown option(s) {', '.join(unknown)}; "
                        f"it takes {', '.join(sorted(allowed))}")


class Client:
    """One connection to sage-busd, shared by any number of threads.

    Client(endpoint="tcp://127.0.0.1:5555", *, name=None, reconnect_min=0.1,
    reconnect_max=2.0, max_pending=100000, max_queued_publishes=10000, inbox_size=1024,
    takeover=False, server_key="", client_key="", interceptors=None)

    It connects in the background and reconnects by itself. name: the connection's name
    (busctl clients; the address send() uses); server_key/client_key: the broker's public
    key and this client's secret key (Z85 text or a `busctl keygen` file), for a broker
    run with auth; interceptors: middleware around every call it makes (Interceptor,
    LoggingInterceptor, MetricsInterceptor), in order. Use it as a context manager, or
    close() it.
    """

    _OPTIONS = {"name", "reconnect_min", "reconnect_max", "max_pending",
                "max_queued_publishes", "inbox_size", "takeover", "server_key", "client_key",
                "interceptors"}

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, **options: Any):
        _check_options(options, self._OPTIONS, "Client()")
        interceptors = options.get("interceptors")
        native_interceptors = _native_interceptors(interceptors, "Client()")
        self.interceptors = tuple(interceptors or ())
        self._native = _native.Client(
            endpoint=str(endpoint),
            name=str(options.get("name") or ""),
            reconnect_min=float(options.get("reconnect_min", 0.1)),
            reconnect_max=float(options.get("reconnect_max", 2.0)),
            max_pending=int(options.get("max_pending", 100000)),
            max_queued_publishes=int(options.get("max_queued_publishes", 10000)),
            inbox_size=int(options.get("inbox_size", 1024)),
            takeover=bool(options.get("takeover", False)),
            server_key=str(options.get("server_key", "")),
            client_key=str(options.get("client_key", "")),
            interceptors=native_interceptors)
        self.endpoint = endpoint
        _clients.add(self)

    # context manager and lifetime

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stops its services and subscriptions, ends what is outstanding CANCELLED, says
        GOODBYE. Idempotent."""
        self._native.close()

    @property
    def closed(self) -> bool:
        return self._native.closed

    @property
    def name(self) -> str:
        """The connection's name, as the broker knows it."""
        return self._native.name()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("connected" if self.connected() else "connecting")
        return f"<sagebus.Client {self.endpoint} {state}>"

    def connected(self) -> bool:
        """True while the broker has welcomed this connection."""
        return self._native.connected()

    def wait_connected(self, timeout: float = 5.0) -> bool:
        """Waits up to `timeout` seconds for the broker's welcome; returns connected()."""
        return self._native.wait_connected(timeout)

    def connection_error(self) -> Optional[Error]:
        """Why this client is not connected while it fails to, else None."""
        why = self._native.connection_error()
        return None if why is None else _error_for(*why)

    # request-response

    def call(self, service: str, method: str, payload: bytes = b"", *, timeout: float = 5.0,
             wait_for_ready: bool = False, idempotent: bool = False, routing_key: str = "",
             headers: Optional[Mapping[str, str]] = None,
             context: Optional[CallContext] = None, traceparent: Optional[str] = None,
             cancel: Optional[CancelToken] = None) -> bytes:
        """Calls `method` of `service` with `payload` and returns the reply's payload.

        Raises the Error subclass of any other outcome. wait_for_ready: wait (up to the
        timeout) for the connection and a live instance instead of failing at once;
        idempotent: the broker may retry it once on another instance if its instance is
        lost; routing_key: for a consistent-hash service; headers: str -> str;
        context: the CallContext it is made within (a handler's request.context: its
        deadline, trace and cancellation); traceparent: a W3C traceparent when there is no
        context (None: a new trace); cancel: a CancelToken that gives it up. Ctrl-C
        interrupts the wait with KeyboardInterrupt and cancels the call.
        """
        if cancel is not None or context is not None:
            _check_cancel(cancel, context)
        return self._native.call(service, method, payload, (
            timeout, wait_for_ready, idempotent, routing_key, dict(headers) if headers else None,
            cancel, context, traceparent or ""))

    def call_async(self, service: str, method: str, payload: bytes = b"", *,
                   timeout: float = 5.0, wait_for_ready: bool = False, idempotent: bool = False,
                   routing_key: str = "", headers: Optional[Mapping[str, str]] = None,
                   context: Optional[CallContext] = None, traceparent: Optional[str] = None,
                   cancel: Optional[CancelToken] = None) -> "concurrent.futures.Future[bytes]":
        """As call(), but returns a concurrent.futures.Future at once; its result is the
        reply's payload, its exception the Error of any other outcome. future.cancel()
        cancels the call (the broker tells its instance) unless it has ended."""
        if cancel is not None or context is not None:
            _check_cancel(cancel, context)
        future = _CallFuture()
        token = self._native.call_async(service, method, payload, (
            timeout, wait_for_ready, idempotent, routing_key, dict(headers) if headers else None,
            cancel, context, traceparent or ""), future._settle)
        future._cancel_call = lambda: token.cancel("cancelled by the caller (future.cancel())")
        return future

    async def acall(self, service: str, method: str, payload: bytes = b"", *,
                    timeout: float = 5.0, wait_for_ready: bool = False,
                    idempotent: bool = False, routing_key: str = "",
                    headers: Optional[Mapping[str, str]] = None,
                    context: Optional[CallContext] = None, traceparent: Optional[str] = None,
                    cancel: Optional[CancelToken] = None) -> bytes:
        """As call(), for asyncio: `await client.acall(...)`. Cancelling the awaiting task
        cancels the call (the broker tells its instance)."""
        if cancel is not None or context is not None:
            _check_cancel(cancel, context)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        inbox = _LoopInbox.of(loop)
        key = inbox.expect(future)
        try:
            token = self._native.call_to_inbox(service, method, payload, (
                timeout, wait_for_ready, idempotent, routing_key,
                dict(headers) if headers else None, cancel, context, traceparent or ""),
                inbox.native, key)
        except BaseException:
            inbox.forget(key)
            raise
        try:
            return await future
        except asyncio.CancelledError:
            token.cancel("cancelled by the caller (its asyncio task was cancelled)")
            inbox.forget(key)
            raise

    # streams

    def stream(self, service: str, method: str, payload: bytes = b"", *, timeout: float = 5.0,
               idle_timeout: Optional[float] = None, window_bytes: int = 1 << 20,
               wait_for_ready: bool = False, routing_key: str = "",
               headers: Optional[Mapping[str, str]] = None,
               context: Optional[CallContext] = None, traceparent: Optional[str] = None,
               cancel: Optional[CancelToken] = None) -> "Stream":
        """Calls `method` of `service`, whose handler answers with a stream of chunks, and
        returns a Stream at once: iterate it (for, async for) for the chunks (bytes).

        timeout covers the whole stream (its deadline); idle_timeout bounds the wait for
        each next chunk (None: only the deadline); window_bytes: the bytes of chunks this
        caller may hold unread (1 B to 64 MiB, each chunk counted as its size plus 64),
        beyond which the service's writer waits (the last chunk it wrote may overrun the
        window). The other options are call()'s. A plain method's reply comes as one chunk.
        """
        if cancel is not None or context is not None:
            _check_cancel(cancel, context)
        window_bytes = int(window_bytes)
        if not 1 <= window_bytes <= 64 << 20:
            raise InvalidArgument(
                f"window_bytes must be between 1 and {64 << 20} bytes, not {window_bytes}")
        return Stream(self._native.stream(service, method, payload, (
            timeout, wait_for_ready, False, routing_key, dict(headers) if headers else None,
            cancel, context, traceparent or ""), float(idle_timeout or 0.0), window_bytes))

    # scatter-gather

    def call_all(self, service: str, method: str, payload: bytes = b"", *,
                 timeout: float = 5.0, headers: Optional[Mapping[str, str]] = None,
                 context: Optional[CallContext] = None, traceparent: Optional[str] = None,
                 cancel: Optional[CancelToken] = None) -> "GatherResult":
        """Calls `method` of every live instance of `service` that has it, and returns once
        each has an outcome: a GatherResult (.asked, .replies: an InstanceReply each, named
        by the instance's connection name, in the order they came), whatever their
        statuses. An instance that has not answered by the timeout gives DEADLINE_EXCEEDED,
        one lost meanwhile UNAVAILABLE, one at its max_inflight OVERLOADED. Raises the Error
        of a failure of the whole: NoResponders when no instance has it, Cancelled,
        Unavailable when the broker is lost... The options are call()'s; Ctrl-C cancels
        it."""
        gather = self.call_all_iter(service, method, payload, timeout=timeout, headers=headers,
                                    context=context, traceparent=traceparent, cancel=cancel)
        replies = list(gather)
        return GatherResult(len(replies) if gather.asked is None else gather.asked, replies)

    async def acall_all(self, service: str, method: str, payload: bytes = b"", *,
                        timeout: float = 5.0, headers: Optional[Mapping[str, str]] = None,
                        context: Optional[CallContext] = None,
                        traceparent: Optional[str] = None,
                        cancel: Optional[CancelToken] = None) -> "GatherResult":
        """As call_all(), for asyncio: `await client.acall_all(...)`. Cancelling the
        awaiting task cancels the call."""
        gather = self.call_all_iter(service, method, payload, timeout=timeout, headers=headers,
                                    context=context, traceparent=traceparent, cancel=cancel)
        replies = [reply async for reply in gather]
        return GatherResult(len(replies) if gather.asked is None else gather.asked, replies)

    def call_all_iter(self, service: str, method: str, payload: bytes = b"", *,
                      timeout: float = 5.0, headers: Optional[Mapping[str, str]] = None,
                      context: Optional[CallContext] = None, traceparent: Optional[str] = None,
                      cancel: Optional[CancelToken] = None) -> "Gather":
        """As call_all(), but returns a Gather at once: iterate it (for, async for) for
        each instance's InstanceReply as it comes; .asked says how many were asked once
        the broker has. Leaving the loop early cancels the call."""
        if cancel is not None or context is not None:
            _check_cancel(cancel, context)
        return Gather(self._native.call_all(service, method, payload, (
            timeout, False, False, "", dict(headers) if headers else None, cancel, context,
            traceparent or "")))

    # the old call shape

    def call_service(self, name: str, *args: Any, method: str = "process",
                     timeout: Optional[float] = None, codec: Optional[JsonCodec] = None,
                     **kwargs: Any) -> Any:
        """Calls `method` of service `name` with Python arguments, encoded by `codec`
        (JSON by default), and returns the decoded result. timeout None: 30 s, waiting
        for the service to be ready."""
        codec = codec or _JSON
        payload = codec.encode_call(args, kwargs)
        reply = self.call(name, method, payload, timeout=30.0 if timeout is None else timeout,
                          wait_for_ready=True)
        return codec.decode_result(reply)

    def call_service_async(self, name: str, *args: Any, method: str = "process",
                           timeout: Optional[float] = None, codec: Optional[JsonCodec] = None,
                           **kwargs: Any) -> "concurrent.futures.Future[Any]":
        """As call_service(), returning a concurrent.futures.Future of the decoded result."""
        codec = codec or _JSON
        payload = codec.encode_call(args, kwargs)
        raw = self.call_async(name, method, payload,
                              timeout=30.0 if timeout is None else timeout, wait_for_ready=True)
        result = _CallFuture()
        result._cancel_call = raw.cancel

        def decode(f: concurrent.futures.Future) -> None:
            if f.cancelled():
                return
            try:
                value = codec.decode_result(f.result())
            except BaseException as e:  # the call's Error, or the codec's
                try:
                    result.set_exception(e)
                except concurrent.futures.InvalidStateError:  # cancelled meanwhile
                    pass
                return
            try:
                result.set_result(value)
            except concurrent.futures.InvalidStateError:
                pass

        raw.add_done_callback(decode)
        return result

    # publish-subscribe

    def publish(self, topic: str, payload: bytes, *, confirm: bool = False,
                timeout: float = 5.0) -> int:
        """Publishes `payload` on `topic` (no wildcards). Returns 0 once queued for the
        broker, or with confirm=True the number of subscriptions that matched."""
        return self._native.publish(topic, payload, confirm, timeout)

    def subscribe(self, pattern: str, callback: Optional[Callable[[Message], Any]] = None, *,
                  window: int = 1024, buffer: int = 0) -> "Subscription":
        """Subscribes to `pattern` ('*' one token, '>' the rest).

        With a callback, it runs on the subscription's own thread, one message at a
        time, in publish order. Without one, the Subscription is an iterator and an
        async iterator of Messages (buffer: how many it keeps for the reader; 0, the
        default, keeps `window`). Close it (or use it as a context manager) to end it.
        """
        return Subscription(self, pattern, callback, window, buffer)

    # point-to-point

    def send(self, peer: str, payload: bytes, *, timeout: float = 5.0, hold: float = 0.0) -> None:
        """Hands `payload` to the connection named `peer`; returns once the peer took it.
        hold: how long the broker keeps it for a peer not connected yet."""
        self._native.send(peer, payload, timeout, hold)

    def receive(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The oldest message sent to this client, waiting up to `timeout` seconds (None:
        until one comes); None when none came."""
        got = self._native.receive(timeout)
        return None if got is None else Message(got[1], sender=got[0])


class _LoopInbox:
    """The outcomes of an event loop's acall()s. The client's callback thread appends them
    to a native inbox without taking the GIL and signals its eventfd once per batch; the
    loop reads them all at once (loop.add_reader), so an outcome costs no GIL hand-off and
    the loop one wake-up for all that came meanwhile."""

    _inboxes: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopInbox]" = \
        weakref.WeakKeyDictionary()
    _inboxes_lock = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.native = _native.Inbox()
        self._futures: Dict[int, asyncio.Future] = {}
        self._tokens = iter(range(1, 1 << 62))
        loop.add_reader(self.native.fileno(), self._settle)

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> "_LoopInbox":
        inbox = cls._inboxes.get(loop)
        if inbox is None:
            with cls._inboxes_lock:
                inbox = cls._inboxes.get(loop)
                if inbox is None:
                    inbox = cls._inboxes[loop] = cls(loop)
        return inbox

    def expect(self, future: asyncio.Future) -> int:
        """A token for the outcome that is to settle `future` (on the loop's thread)."""
        token = next(self._tokens)
        self._futures[token] = future
        return token

    def forget(self, token: int) -> None:
        self._futures.pop(token, None)

    def _settle(self) -> None:
        for token, status, message, reply in self.native.drain():
            future = self._futures.pop(token, None)
            if future is None or future.done():  # its task was cancelled
                continue
            if status == Status.OK:
                future.set_result(reply)
            else:
                future.set_exception(_error_for(status, message))


# --- streams ----------------------------------------------------------------------------


class _Reader:
    """What Stream and Gather share: a native reader (python/src/native.cpp, ReadQueue)
    read as an iterator and an async iterator, each item made by _item(); leaving either
    loop early, a `with` / `async with` block, or aclose() cancels the call."""

    __slots__ = ("_native", "_eager", "__weakref__")

    # async reads that found their item there, in a row, before one lets the loop run
    # other tasks: a call faster than its reader must not starve them
    _EAGER = 32

    def __init__(self, native: Any):
        self._native = native
        self._eager = 0

    @staticmethod
    def _item(raw: Any) -> Any:
        return raw

    # sync

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._native.cancel()

    def __next__(self) -> Any:
        raw = self._native.next()
        if raw is None:
            raise StopIteration
        return self._item(raw)

    def __iter__(self) -> Iterator[Any]:
        return self._items()

    def _items(self) -> Iterator[Any]:
        native = self._native
        try:
            while True:
                raw = native.next()  # waits without the GIL, handling signals
                if raw is None:
                    return
                yield self._item(raw)
        finally:
            native.cancel()  # nothing once it has ended

    # asyncio

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._native.cancel()

    async def aclose(self) -> None:
        self._native.cancel()

    async def __anext__(self) -> Any:
        raw = await self._read()
        if raw is None:
            raise StopAsyncIteration
        return self._item(raw)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._aitems()

    async def _aitems(self) -> AsyncIterator[Any]:
        try:
            while True:
                raw = await self._read()
                if raw is None:
                    return
                yield self._item(raw)
        finally:
            self._native.cancel()

    async def _read(self) -> Any:
        # Items already there are taken at once; else the native reader wakes the loop
        # through its inbox (an eventfd the loop reads) when the next item or the end is.
        native = self._native
        while True:
            state, raw = native.poll()
            if state == 0:
                self._eager += 1
                if self._eager >= self._EAGER:
                    self._eager = 0
                    await asyncio.sleep(0)
                return raw
            if state == 2:
                return None
            self._eager = 0
            loop = asyncio.get_running_loop()
            inbox = _LoopInbox.of(loop)
            ready = loop.create_future()
            key = inbox.expect(ready)
            if not native.watch(inbox.native, key):
                inbox.forget(key)
                continue
            try:
                await ready
            except BaseException:
                native.unwatch()
                inbox.forget(key)
                raise


class Stream(_Reader):
    """A streamed reply (Client.stream): its chunks (bytes) in order, then one outcome.

    Iterate it: `for chunk in stream:` or `async for chunk in stream:` (which never blocks
    the event loop); the loop ends when the stream ends OK, and raises the Error of any
    other end (after the chunks that came before it): DeadlineExceeded past the deadline
    or the idle timeout, Unavailable when the instance is lost, the handler's error.
    Leaving such a loop before the end (break, an exception, a cancelled task) cancels the
    stream, as do cancel(), leaving a `with` / `async with` block, and dropping the
    Stream: the broker tells the instance, whose handler sees the cancellation.
    next(stream) / await anext(stream) read one chunk without that.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<sagebus.Stream chunks={self._native.chunks}>"

    @property
    def chunks(self) -> int:
        """Chunks read so far."""
        return self._native.chunks

    def cancel(self) -> None:
        """Gives the stream up: unless it has ended, reading it raises Cancelled at once, and
        the broker tells the instance (its handler sees request.cancelled, its generator
        Cancelled at its next chunk)."""
        self._native.cancel()


# --- scatter-gather ---------------------------------------------------------------------


class InstanceReply:
    """One instance's outcome of a call_all: .instance (its connection's name), .status (a
    Status), .message (why, when not OK), .payload (bytes); .ok, .error (the Error of a
    failed outcome, else None)."""

    __slots__ = ("instance", "status", "message", "payload")

    def __init__(self, instance: str, status: int, message: str = "", payload: bytes = b""):
        self.instance = instance
        self.status = _status_of(status)
        self.message = message
        self.payload = payload

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def error(self) -> Optional[Error]:
        return None if self.ok else _error_for(self.status, self.message)

    def __repr__(self) -> str:
        if self.ok:
            return f"InstanceReply({self.instance!r}, OK, payload={self.payload!r})"
        return f"InstanceReply({self.instance!r}, {self.status.name}, {self.message!r})"


class GatherResult:
    """What call_all() returns: .asked (how many instances were asked) and .replies (one
    InstanceReply each, in the order they came). Iterating it iterates .replies."""

    __slots__ = ("asked", "replies")

    def __init__(self, asked: int, replies: list):
        self.asked = asked
        self.replies = replies

    def __iter__(self) -> Iterator[InstanceReply]:
        return iter(self.replies)

    def __len__(self) -> int:
        return len(self.replies)

    def __repr__(self) -> str:
        ok = sum(1 for r in self.replies if r.ok)
        return f"<sagebus.GatherResult asked={self.asked} replies={len(self.replies)} ok={ok}>"


class Gather(_Reader):
    """A call_all in progress (Client.call_all_iter): iterate it (for, async for) for each
    instance's InstanceReply as it comes; the loop ends once every instance asked has one,
    and raises the Error of a failure of the whole (NoResponders, Cancelled, ...).

    .asked is how many instances were asked, None until the broker has said (it has once
    the first reply is read). Leaving such a loop before its end, cancel(), leaving a
    `with` / `async with` block and dropping the Gather cancel the call: the broker tells
    the instances still running it.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<sagebus.Gather asked={self.asked} read={self._native.read}>"

    @property
    def asked(self) -> Optional[int]:
        return self._native.asked

    def cancel(self) -> None:
        """Gives the call up: unless it has ended, reading raises Cancelled at once, and the
        broker tells the instances still running it."""
        self._native.cancel()

    @staticmethod
    def _item(raw: Any) -> "InstanceReply":
        return InstanceReply(*raw)


# --- subscriptions ----------------------------------------------------------------------


class Subscription:
    """A live subscription: close() ends it. Without a callback, iterate it (for or async
    for) to read its Messages."""

    def __init__(self, client: Client, pattern: str, callback: Optional[Callable], window: int,
                 buffer: int):
        self.pattern = pattern
        self._closed = False
        if callback is not None:
            def handler(topic: str, payload: bytes, missed: int) -> None:
                callback(Message(payload, topic=topic, missed_before=missed))
            self._queue: Optional[queue.Queue] = None
        else:
            self._queue = queue.Queue(maxsize=buffer or window)

            def handler(topic: str, payload: bytes, missed: int) -> None:
                # The subscription's thread waits while the reader is behind, so the
                # broker's credit, not this buffer, bounds what is held; until it is closed,
                # by close() or by its client's.
                while not self._ended():
                    try:
                        self._queue.put(Message(payload, topic=topic, missed_before=missed),
                                        timeout=0.1)
                        return
                    except queue.Full:
                        continue
        self._native = client._native.subscribe(pattern, handler, int(window))

    def _ended(self) -> bool:
        native = getattr(self, "_native", None)  # None while subscribe() has not returned
        return self._closed or (native is not None and native.closed)

    def wait_subscribed(self, timeout: float = 5.0) -> bool:
        """Waits for the broker to confirm it, so that what is published from now on
        reaches it. Raises the broker's refusal (e.g. PermissionDenied)."""
        return self._native.wait_subscribed(timeout)

    def close(self) -> None:
        self._closed = True
        self._native.close()
        if self._queue is not None:
            try:
                self._queue.put_nowait(None)  # wakes a reader
            except queue.Full:
                pass

    @property
    def missed(self) -> int:
        return self._native.missed

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def get(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next message, waiting up to `timeout` seconds; None on timeout or close."""
        if self._queue is None:
            raise TypeError("this Subscription has a callback; it cannot be read")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                return None
            try:
                message = self._queue.get(timeout=left)
            except queue.Empty:
                if self._ended():
                    return None
                continue
            return message

    def __iter__(self) -> Iterator[Message]:
        while True:
            message = self.get()
            if message is None:
                return
            yield message

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[Message]:
        # The wait runs on the loop's default executor, so the loop is never blocked.
        loop = asyncio.get_running_loop()
        while True:
            message = await loop.run_in_executor(None, self.get, 0.5)
            if message is None:
                if self._ended():
                    return
                continue
            yield message


# --- services ---------------------------------------------------------------------------


class Request:
    """A call to a service: .payload (bytes), .method, .headers (dict), .deadline (in
    time.monotonic() seconds), .time_left() in seconds; .context, the CallContext to make
    calls within (client.call(..., context=request.context): the same deadline, trace and
    cancellation); .cancelled, true once the caller cancelled or left (what the handler
    returns then is dropped); .trace_id, the chain's W3C trace id (32 hex digits)."""

    __slots__ = ("method", "payload", "headers", "deadline", "_context")

    def __init__(self, method: str, payload: bytes, headers: Dict[str, str], deadline: float,
                 context: Optional[CallContext] = None):
        self.method = method
        self.payload = payload
        self.headers = headers
        self.deadline = deadline
        self._context = context

    def time_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    @property
    def context(self) -> CallContext:
        if self._context is None:
            self._context = CallContext(deadline=self.deadline)
        return self._context

    @property
    def cancelled(self) -> bool:
        return self._context is not None and self._context.cancelled

    @property
    def trace_id(self) -> str:
        return self._context.trace_id if self._context is not None else ""

    def __repr__(self) -> str:
        return f"Request(method={self.method!r}, payload={self.payload!r})"


class Service:
    """One instance of a named service, served over a Client.

    Service(client, name, *, max_inflight=16, workers=0, version="0",
    strategy=Strategy.LEAST_OUTSTANDING, handler=None, codec=None, interceptors=None)

    Handlers take a Request and return bytes; plain functions run on the service's
    worker threads (workers: how many; 0 means min(max_inflight, 64)), `async def` ones
    on the service's own event loop thread. Add them with @service.method("name") or
    service.handle("name", fn), or pass handler=obj: each public method of obj becomes a
    method of the service, called with the arguments the caller's call_service() encoded
    (codec, JSON by default) and its result encoded back. A handler's exception reaches
    the caller as HandlerError ("Type: message"); a sagebus.Error keeps its own status.
    start() registers it; stop() unregisters and drains; run() serves until Ctrl-C.
    interceptors: middleware around every call it serves (Interceptor, LoggingInterceptor,
    MetricsInterceptor), in order; their before() and after() run on the worker threads.
    """

    _OPTIONS = {"max_inflight", "workers", "version", "strategy", "handler", "codec",
                "interceptors"}

    def __init__(self, client: Client, name: str, **options: Any):
        _check_options(options, self._OPTIONS, "Service()")
        self.name = name
        self._client = client
        self._codec = options.get("codec") or _JSON
        max_inflight = int(options.get("max_inflight", 16))
        interceptors = options.get("interceptors")
        native_interceptors = _native_interceptors(interceptors, "Service()")
        self.interceptors = tuple(interceptors or ())
        self._native = _native.Service(
            client._native, name, max_inflight=max_inflight,
            workers=int(options.get("workers", 0)), version=str(options.get("version", "0")),
            strategy=int(Strategy(options.get("strategy", Strategy.LEAST_OUTSTANDING))),
            interceptors=native_interceptors)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._methods: list = []
        handler = options.get("handler")
        if handler is not None:
            self._serve_object(handler)

    def method(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator: @service.method("retrieve") makes the function that method (a
        generator function, plain or async, a streaming method: see handle())."""
        def register(fn: Callable) -> Callable:
            self.handle(name, fn)
            return fn
        return register

    def stream_method(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator: @service.stream_method("generate") makes the function, which returns
        an iterable of chunks, that streaming method (handle_stream())."""
        def register(fn: Callable) -> Callable:
            self.handle_stream(name, fn)
            return fn
        return register

    def handle(self, name: str, fn: Callable[[Request], Any]) -> None:
        """Makes `fn(request) -> bytes` (or an `async def`) the handler of method `name`.
        A generator function (`def` or `async def` with `yield`) makes it a streaming
        method instead, as handle_stream() does."""
        if not callable(fn):
            raise TypeError(f"the handler of {name!r} must be callable, not {type(fn).__name__}")
        metrics = getattr(fn, "__self__", None)
        if isinstance(metrics, MetricsInterceptor) and \
                getattr(fn, "__func__", None) is MetricsInterceptor.handler:
            self._native.handle_metrics(name, metrics._native)  # answered in C++
            self._methods.append(name)
            return
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            return self.handle_stream(name, fn)
        if inspect.iscoroutinefunction(fn):
            run = self._coroutine_runner(fn)
        else:
            def run(method: str, payload: bytes, headers: Dict[str, str], deadline: float,
                    context: CallContext) -> Any:
                return fn(Request(method, payload, headers, deadline, context))
        self._native.handle(name, run)
        self._methods.append(name)

    def handle_stream(self, name: str, fn: Callable[[Request], Any]) -> None:
        """Makes `fn(request)` the streaming handler of method `name` (Client.stream calls
        it): it returns an iterable of chunks (bytes), typically as a generator, or is an
        async generator function (run on the service's event loop). Each chunk is sent as
        it is yielded, waiting while the caller's window is full. When the caller cancels
        (or the deadline passes), the generator gets Cancelled (DeadlineExceeded) raised
        at its `yield`, and is closed. Its end ends the stream OK; its exception ends it
        with that error. A plain call() to it fails InvalidArgument."""
        if not callable(fn):
            raise TypeError(f"the handler of {name!r} must be callable, not {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"the streaming handler of {name!r} is an async def without yield: "
                            "make it an async generator (yield each chunk)")
        if inspect.isasyncgenfunction(fn):
            run = self._async_generator_runner(fn)
        else:
            def run(method: str, payload: bytes, headers: Dict[str, str], deadline: float,
                    context: CallContext, writer: Any) -> None:
                _write_chunks(fn(Request(method, payload, headers, deadline, context)), writer)
        self._native.handle_stream(name, run)
        self._methods.append(name)

    def _coroutine_runner(self, fn: Callable) -> Callable:
        loop = self._event_loop()

        def run(method: str, payload: bytes, headers: Dict[str, str], deadline: float,
                context: CallContext) -> Any:
            request = Request(method, payload, headers, deadline, context)
            # The worker thread waits (without the GIL) while the loop runs it; the task is
            # cancelled if the call is.
            return asyncio.run_coroutine_threadsafe(
                _cancellable(fn(request), context.cancel), loop).result()
        return run

    def _async_generator_runner(self, fn: Callable) -> Callable:
        loop = self._event_loop()

        def run(method: str, payload: bytes, headers: Dict[str, str], deadline: float,
                context: CallContext, writer: Any) -> None:
            generator = fn(Request(method, payload, headers, deadline, context))

            def on_loop(awaitable: Any) -> Any:
                # Each step runs on the loop, cancelled if the call is; the worker thread
                # waits for it, then writes the chunk (waiting for the caller's window).
                return asyncio.run_coroutine_threadsafe(
                    _cancellable(awaitable, context.cancel), loop).result()

            try:
                while True:
                    try:
                        chunk = on_loop(generator.__anext__())
                    except StopAsyncIteration:
                        return
                    try:
                        writer.write(chunk)
                    except BaseException as e:
                        try:  # the handler sees it at its yield (and cleans up, uncancelled)
                            asyncio.run_coroutine_threadsafe(
                                _awaited(generator.athrow(e)), loop).result()
                        except BaseException:
                            pass
                        raise
            finally:
                try:
                    asyncio.run_coroutine_threadsafe(_awaited(generator.aclose()), loop).result()
                except BaseException:
                    pass
        return run

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(target=self._loop.run_forever,
                                                 name=f"sagebus-{self.name}-loop", daemon=True)
            self._loop_thread.start()
        return self._loop

    def _serve_object(self, obj: Any) -> None:
        codec = self._codec
        for attr in dir(obj):
            if attr.startswith("_"):
                continue
            member = getattr(obj, attr)
            if not callable(member):
                continue
            if inspect.iscoroutinefunction(member):
                async def handler(request: Request, member: Callable = member) -> bytes:
                    args, kwargs = codec.decode_call(request.payload)
                    return codec.encode_result(await member(*args, **kwargs))
            else:
                def handler(request: Request, member: Callable = member) -> bytes:
                    args, kwargs = codec.decode_call(request.payload)
                    return codec.encode_result(member(*args, **kwargs))
            self.handle(attr, handler)
        if not self._methods:
            raise TypeError(f"{type(obj).__name__} has no public methods to serve")

    def start(self, wait: Optional[float] = None) -> "Service":
        """Registers with the broker (now if connected, else once it is). With `wait`,
        waits that many seconds for the broker to confirm: raises its refusal, or
        DeadlineExceeded."""
        self._native.start()
        if wait is not None and not self._native.wait_registered(wait):
            raise DeadlineExceeded(f"service {self.name!r} was not registered within {wait} s")
        return self

    def wait_registered(self, timeout: float = 5.0) -> bool:
        return self._native.wait_registered(timeout)

    def stop(self, drain: float = 5.0) -> None:
        """Unregisters (no new calls come) and waits up to `drain` seconds for the calls
        it holds. Idempotent."""
        self._native.stop(drain)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)
            self._loop = None

    def run(self) -> None:
        """start()s it and serves until KeyboardInterrupt (Ctrl-C), then stop()s it."""
        self.start()
        try:
            while True:
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    @property
    def served(self) -> int:
        return self._native.served

    def __enter__(self) -> "Service":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _write_chunks(chunks: Any, writer: Any) -> None:
    """Writes what a streaming handler returned (an iterable of bytes) to its stream, one
    chunk at a time; the writer's error (Cancelled, DeadlineExceeded) is raised into the
    generator at its yield, and the generator closed."""
    if isinstance(chunks, (bytes, bytearray, memoryview, str)):
        raise TypeError("a streaming handler returns an iterable of chunks (bytes), not "
                        f"{type(chunks).__name__}")
    iterator = iter(chunks)
    try:
        for chunk in iterator:
            try:
                writer.write(chunk)  # without the GIL, waiting for the caller's window
            except BaseException as e:
                throw = getattr(iterator, "throw", None)
                if throw is not None:
                    try:  # the handler sees it at its yield
                        throw(e)
                    except BaseException:
                        pass
                raise
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


async def _cancellable(awaitable: Any, token: CancelToken) -> Any:
    """Awaits `awaitable` in the running task (on a service's loop), cancelling the task
    when `token` is: the token's notice reaches the loop through its inbox, as acall()'s
    outcomes do, so no Python runs on the thread that cancels."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    inbox = _LoopInbox.of(loop)
    notice = loop.create_future()
    key = inbox.expect(notice)

    def cancel_task(_: Any) -> None:
        if task is not None:
            task.cancel()

    notice.add_done_callback(cancel_task)
    registration = token._notify(inbox.native, key)
    try:
        return await awaitable
    finally:
        token._forget(registration)
        notice.remove_done_callback(cancel_task)
        inbox.forget(key)


# --- legacy queues ----------------------------------------------------------------------


class QueueItem(NamedTuple):
    """An item as LegacyQueue.get_item() returns it."""

    data: bytes
    redelivered: bool
    deliveries: int


class LegacyQueue:
    """A named queue on the bus with the standard library's queue.Queue shape.

    get() takes an item and acknowledges the one this object's previous get() returned
    (an item taken and never acknowledged goes back to the queue when this client
    leaves, and is redelivered: see get_item()). One reader per object.

    When the broker has a store (sage-busd --store), a queue is durable: put() returns
    once the item is on disk, and items survive the broker's restart. transient=True
    declares the queue memory-only (InvalidArgument if it is durable and holds items).
    """

    def __init__(self, client: Client, name: str, transient: bool = False):
        self.name = name
        self._native = _native.LegacyQueue(client._native, name, transient)

    def put(self, item: bytes, block: bool = True, timeout: Optional[float] = None,
            ttl: Optional[float] = None) -> None:
        """Puts `item` (bytes) on the queue. It never waits for room: a full queue raises
        queue.Full at once, whatever `block` says; `timeout` (default 5 s) bounds the wait
        for the broker's answer. With `ttl` (seconds), the broker removes the item if no
        get takes it within that long."""
        try:
            self._native.put(item, 5.0 if timeout is None else timeout, ttl or 0.0)
        except Overloaded as e:
            raise queue.Full(str(e)) from e

    def put_nowait(self, item: bytes) -> None:
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: Optional[float] = None) -> bytes:
        """Takes the oldest item, waiting up to `timeout` seconds (None: until there is
        one; block=False: not at all); raises queue.Empty if none came."""
        return self.get_item(block, timeout).data

    def get_item(self, block: bool = True, timeout: Optional[float] = None) -> "QueueItem":
        """As get(), with whether the item was handed out before (its reader left, or the
        broker stopped, before acknowledging it) and how many times, this one included."""
        item = self._native.get(timeout if block else 0.0)
        if item is None:
            raise queue.Empty()
        return QueueItem(*item)

    def get_nowait(self) -> bytes:
        return self.get(block=False)

    def task_done(self) -> None:
        """Acknowledges the item the last get() returned now, instead of at the next get().
        Once it returns the item is never delivered again; NotFound if the broker no longer
        knows it (it restarted, or this client reconnected): the item comes back."""
        self._native.ack()

    def nack(self) -> None:
        """Gives the item the last get() returned back to the queue now, unacknowledged:
        the next reader gets it, marked redelivered."""
        self._native.nack()

    def qsize(self) -> int:
        return self._native.size()

    def empty(self) -> bool:
        return self.qsize() == 0

    def close(self) -> None:
        self._native.close()

    def __enter__(self) -> "LegacyQueue":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --- the process's default client -------------------------------------------------------

_JSON = JsonCodec()
_default: Optional[Client] = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The process's shared Client for call_service(): made on first use, on the endpoint
    in SAGEBUS_ENDPOINT (default tcp://127.0.0.1:5555)."""
    global _default
    with _default_lock:
        if _default is None or _default.closed or getattr(_default, "_pid", None) != os.getpid():
            _default = Client(os.environ.get("SAGEBUS_ENDPOINT", DEFAULT_ENDPOINT))
            _default._pid = os.getpid()  # type: ignore[attr-defined]
        return _default


def call_service(name: str, *args: Any, method: str = "process", timeout: Optional[float] = None,
                 codec: Optional[JsonCodec] = None, client: Optional[Client] = None,
                 **kwargs: Any) -> Any:
    """The old call shape: calls `method` of service `name` with Python arguments (JSON by
    default) through `client` (default_client() if None) and returns the decoded result."""
    return (client or default_client()).call_service(name, *args, method=method,
                                                     timeout=timeout, codec=codec, **kwargs)


def call_service_async(name: str, *args: Any, method: str = "process",
                       timeout: Optional[float] = None, codec: Optional[JsonCodec] = None,
                       client: Optional[Client] = None,
                       **kwargs: Any) -> "concurrent.futures.Future[Any]":
    """As call_service(), returning a concurrent.futures.Future."""
    return (client or default_client()).call_service_async(name, *args, method=method,
                                                           timeout=timeout, codec=codec, **kwargs)


@atexit.register
def _close_all() -> None:
    # Before the interpreter finalizes: the clients' threads may run Python code, which
    # must have ended by then. A client made before a fork() is not the child's to close.
    for client in list(_clients):
        try:
            client.close()
        except Error:
            pass
