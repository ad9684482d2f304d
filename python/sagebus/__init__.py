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
import sys
import threading
import time
import weakref
from typing import Any, AsyncIterator, Callable, Dict, Iterator, Mapping, NamedTuple, Optional

from . import _native

__all__ = [
    "Client", "Service", "Request", "Message", "Subscription", "LegacyQueue", "QueueItem", "Status",
    "Strategy", "Error", "NoResponders", "Unavailable", "DeadlineExceeded", "Overloaded",
    "Undeliverable", "InvalidArgument", "NotFound", "HandlerError", "PermissionDenied",
    "Cancelled", "Internal", "Unauthenticated", "JsonCodec", "PickleCodec", "call_service",
    "call_service_async", "default_client",
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
    """The client, service or queue was closed while the operation waited."""
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


def _raise_if_failed(status: int, message: str) -> None:
    if status != Status.OK:
        raise _error_for(status, message)


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
    takeover=False, server_key="", client_key="")

    It connects in the background and reconnects by itself. name: the connection's name
    (busctl clients; the address send() uses); server_key/client_key: the broker's public
    key and this client's secret key (Z85 text or a `busctl keygen` file), for a broker
    run with auth. Use it as a context manager, or close() it.
    """

    _OPTIONS = {"name", "reconnect_min", "reconnect_max", "max_pending",
                "max_queued_publishes", "inbox_size", "takeover", "server_key", "client_key"}

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, **options: Any):
        _check_options(options, self._OPTIONS, "Client()")
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
            client_key=str(options.get("client_key", "")))
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
             headers: Optional[Mapping[str, str]] = None) -> bytes:
        """Calls `method` of `service` with `payload` and returns the reply's payload.

        Raises the Error subclass of any other outcome. wait_for_ready: wait (up to the
        timeout) for the connection and a live instance instead of failing at once;
        idempotent: the broker may retry it once on another instance if its instance is
        lost; routing_key: for a consistent-hash service; headers: str -> str.
        """
        return self._native.call(service, method, payload, timeout, wait_for_ready,
                                 idempotent, routing_key, dict(headers or {}))

    def call_async(self, service: str, method: str, payload: bytes = b"", *,
                   timeout: float = 5.0, wait_for_ready: bool = False, idempotent: bool = False,
                   routing_key: str = "", headers: Optional[Mapping[str, str]] = None
                   ) -> "concurrent.futures.Future[bytes]":
        """As call(), but returns a concurrent.futures.Future at once; its result is the
        reply's payload, its exception the Error of any other outcome."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()

        def done(status: int, message: str, reply: bytes) -> None:
            if status == Status.OK:
                future.set_result(reply)
            else:
                future.set_exception(_error_for(status, message))

        self._native.call_async(service, method, payload, timeout, wait_for_ready, idempotent,
                                routing_key, dict(headers or {}), done)
        return future

    async def acall(self, service: str, method: str, payload: bytes = b"", *,
                    timeout: float = 5.0, wait_for_ready: bool = False,
                    idempotent: bool = False, routing_key: str = "",
                    headers: Optional[Mapping[str, str]] = None) -> bytes:
        """As call(), for asyncio: `await client.acall(...)`."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        inbox = _LoopInbox.of(loop)
        token = inbox.expect(future)
        try:
            self._native.call_to_inbox(service, method, payload, timeout, wait_for_ready,
                                       idempotent, routing_key, dict(headers or {}),
                                       inbox.native, token)
        except BaseException:
            inbox.forget(token)
            raise
        return await future

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
        result: concurrent.futures.Future = concurrent.futures.Future()
        result.set_running_or_notify_cancel()

        def decode(f: concurrent.futures.Future) -> None:
            try:
                result.set_result(codec.decode_result(f.result()))
            except BaseException as e:  # the call's Error, or the codec's
                result.set_exception(e)

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
    time.monotonic() seconds), .time_left() in seconds."""

    __slots__ = ("method", "payload", "headers", "deadline")

    def __init__(self, method: str, payload: bytes, headers: Dict[str, str], deadline: float):
        self.method = method
        self.payload = payload
        self.headers = headers
        self.deadline = deadline

    def time_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def __repr__(self) -> str:
        return f"Request(method={self.method!r}, payload={self.payload!r})"


class Service:
    """One instance of a named service, served over a Client.

    Service(client, name, *, max_inflight=16, workers=0, version="0",
    strategy=Strategy.LEAST_OUTSTANDING, handler=None, codec=None)

    Handlers take a Request and return bytes; plain functions run on the service's
    worker threads (workers: how many; 0 means min(max_inflight, 64)), `async def` ones
    on the service's own event loop thread. Add them with @service.method("name") or
    service.handle("name", fn), or pass handler=obj: each public method of obj becomes a
    method of the service, called with the arguments the caller's call_service() encoded
    (codec, JSON by default) and its result encoded back. A handler's exception reaches
    the caller as HandlerError ("Type: message"); a sagebus.Error keeps its own status.
    start() registers it; stop() unregisters and drains; run() serves until Ctrl-C.
    """

    _OPTIONS = {"max_inflight", "workers", "version", "strategy", "handler", "codec"}

    def __init__(self, client: Client, name: str, **options: Any):
        _check_options(options, self._OPTIONS, "Service()")
        self.name = name
        self._client = client
        self._codec = options.get("codec") or _JSON
        max_inflight = int(options.get("max_inflight", 16))
        self._native = _native.Service(
            client._native, name, max_inflight=max_inflight,
            workers=int(options.get("workers", 0)), version=str(options.get("version", "0")),
            strategy=int(Strategy(options.get("strategy", Strategy.LEAST_OUTSTANDING))))
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._methods: list = []
        handler = options.get("handler")
        if handler is not None:
            self._serve_object(handler)

    def method(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator: @service.method("retrieve") makes the function that method."""
        def register(fn: Callable) -> Callable:
            self.handle(name, fn)
            return fn
        return register

    def handle(self, name: str, fn: Callable[[Request], Any]) -> None:
        """Makes `fn(request) -> bytes` (or an `async def`) the handler of method `name`."""
        if not callable(fn):
            raise TypeError(f"the handler of {name!r} must be callable, not {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            run = self._coroutine_runner(fn)
        else:
            def run(method: str, payload: bytes, headers: Dict[str, str], deadline: float) -> Any:
                return fn(Request(method, payload, headers, deadline))
        self._native.handle(name, run)
        self._methods.append(name)

    def _coroutine_runner(self, fn: Callable) -> Callable:
        loop = self._event_loop()

        def run(method: str, payload: bytes, headers: Dict[str, str], deadline: float) -> Any:
            request = Request(method, payload, headers, deadline)
            # The worker thread waits (without the GIL) while the loop runs it.
            return asyncio.run_coroutine_threadsafe(fn(request), loop).result()
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
