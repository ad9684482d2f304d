"""Bad input on a stream's wire, from Python, through the real broker (docs/protocol.md,
"Streams", "Cancellation"): raw ZeroMQ DEALERs stand for a service instance, a caller and
an observer that reads the broker's counters, so that each test sends exactly the messages
it names and sees exactly what the broker sends back (as tests/integration/
test_stream_wire.cpp does in C++). A CHUNK after the final REPLY, for a call that is not a
stream, or beyond the caller's credit, and a CANCEL naming no call, is dropped, counted and
disturbs nothing: the call or stream goes on, and a plain call from the Python client still
works afterwards.

There is no protobuf module here: the few fields of sagebus.wire.Header (and of
sagebus.admin.BrokerStatus's counters) that the tests use are encoded and decoded by hand
(proto/sagebus/wire.proto, proto/sagebus/admin.proto give the field numbers).
"""
import time

import pytest
import zmq

TIMEOUT_MS = 5000

# ---------------------------------------------------------------------------------------
# A tiny protobuf codec: varints and length-delimited fields, just what the tests use.

# sagebus.wire.Kind
HELLO, WELCOME, HEARTBEAT, REGISTER, REQUEST, REPLY = 1, 2, 4, 6, 8, 9
CREDIT, CANCEL, CHUNK = 14, 26, 27
KIND_NAMES = {1: "HELLO", 2: "WELCOME", 3: "HELLO_REQUIRED", 4: "HEARTBEAT", 5: "GOODBYE",
              6: "REGISTER", 8: "REQUEST", 9: "REPLY", 14: "CREDIT", 26: "CANCEL", 27: "CHUNK"}
# sagebus.wire.Status
OK = 0

# sagebus.wire.Header field numbers
H_VERSION, H_KIND, H_ID, H_STATUS, H_MESSAGE, H_SERVICE, H_METHOD, H_TIMEOUT_MS = 1, 2, 3, 4, 5, 6, 7, 8
H_HELLO, H_REGISTRATION, H_CREDIT, H_STREAM = 14, 16, 20, 34
# sagebus.wire.Hello / Registration
HELLO_NAME, HELLO_INSTANCE_ID = 1, 2
REG_METHODS, REG_MAX_INFLIGHT = 1, 3
# sagebus.admin.BrokerStatus.counters, and sagebus.admin.Counters
STATUS_COUNTERS = 12
COUNTER_FIELDS = {"chunks": 30, "rejected_chunks": 31, "streams": 29, "cancelled": 34,
                  "rejected_cancels": 35, "rejected_credits": 33}


def varint(n: int) -> bytes:
    assert n >= 0
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    """A varint field; proto3 leaves out the default (0, false)."""
    return varint(number << 3) + varint(int(value)) if value else b""


def field_bytes(number: int, value) -> bytes:
    """A length-delimited field (string, bytes, nested message); empty is left out."""
    if isinstance(value, str):
        value = value.encode()
    return varint((number << 3) | 2) + varint(len(value)) + value if value else b""


def read_varint(data: bytes, pos: int):
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def decode_fields(data: bytes) -> dict:
    """{field number: [values]}: ints for varints, bytes for length-delimited fields."""
    fields = {}
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = read_varint(data, pos)
        elif wire_type == 2:
            length, pos = read_varint(data, pos)
            value = data[pos:pos + length]
            if len(value) != length:
                raise ValueError("truncated field")
            pos += length
        elif wire_type == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire_type == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        fields.setdefault(number, []).append(value)
    return fields


class Header:
    """The fields of a sagebus.wire.Header the tests use; .payload holds the payload frames
    of a received message."""

    def __init__(self, kind: int, id: int = 0, **fields):
        self.kind = kind
        self.id = id
        self.status = fields.pop("status", 0)
        self.message = fields.pop("message", "")
        self.service = fields.pop("service", "")
        self.method = fields.pop("method", "")
        self.timeout_ms = fields.pop("timeout_ms", 0)
        self.credit = fields.pop("credit", 0)
        self.stream = fields.pop("stream", False)
        self.hello_name = fields.pop("hello_name", "")
        self.methods = fields.pop("methods", [])
        self.max_inflight = fields.pop("max_inflight", 0)
        assert not fields, f"unknown fields {fields}"
        self.payload = []

    def encode(self) -> bytes:
        out = field_varint(H_VERSION, 1) + field_varint(H_KIND, self.kind) + \
            field_varint(H_ID, self.id) + field_varint(H_STATUS, self.status) + \
            field_bytes(H_MESSAGE, self.message) + field_bytes(H_SERVICE, self.service) + \
            field_bytes(H_METHOD, self.method) + field_varint(H_TIMEOUT_MS, self.timeout_ms)
        if self.hello_name:
            hello = field_bytes(HELLO_NAME, self.hello_name) + \
                field_bytes(HELLO_INSTANCE_ID, "raw-" + self.hello_name)
            out += field_bytes(H_HELLO, hello)
        if self.methods:
            registration = b"".join(field_bytes(REG_METHODS, m) for m in self.methods) + \
                field_varint(REG_MAX_INFLIGHT, self.max_inflight)
            out += field_bytes(H_REGISTRATION, registration)
        return out + field_varint(H_CREDIT, self.credit) + field_varint(H_STREAM, self.stream)

    @classmethod
    def decode(cls, data: bytes) -> "Header":
        f = decode_fields(data)

        def one(number, default):
            return f[number][-1] if number in f else default

        assert one(H_VERSION, 0) == 1, f"header version {one(H_VERSION, 0)}"
        return cls(one(H_KIND, 0), one(H_ID, 0), status=one(H_STATUS, 0),
                   message=one(H_MESSAGE, b"").decode(), service=one(H_SERVICE, b"").decode(),
                   method=one(H_METHOD, b"").decode(), timeout_ms=one(H_TIMEOUT_MS, 0),
                   credit=one(H_CREDIT, 0), stream=bool(one(H_STREAM, 0)))

    def __repr__(self):
        return (f"Header({KIND_NAMES.get(self.kind, self.kind)} id={self.id} status={self.status}"
                f" message={self.message!r} stream={self.stream} credit={self.credit}"
                f" payload={self.payload!r})")


def test_the_codec_round_trips_and_matches_protobuf_bytes():
    assert varint(0) == b"\x00" and varint(300) == b"\xac\x02"
    assert read_varint(varint(2**63 + 5), 0) == (2**63 + 5, 10)
    # Header{version: 1, kind: CHUNK, id: 150}, as protoc would write it.
    assert Header(CHUNK, 150).encode() == b"\x08\x01\x10\x1b\x18\x96\x01"
    # stream (field 34) takes a two-byte key.
    assert field_varint(H_STREAM, True) == b"\x90\x02\x01"
    h = Header.decode(Header(REQUEST, 7, service="s", method="m", timeout_ms=10, credit=3,
                             stream=True).encode())
    assert (h.kind, h.id, h.service, h.method, h.timeout_ms, h.credit, h.stream) == \
        (REQUEST, 7, "s", "m", 10, 3, True)


# ---------------------------------------------------------------------------------------
# Raw peers.


class RawPeer:
    """A raw DEALER connection to the broker: sends whatever headers the test builds and
    receives with a timeout. Use from the test's thread only."""

    def __init__(self, context: zmq.Context, endpoint: str):
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.next_id = 0

    def close(self):
        self.socket.close(linger=0)

    def send(self, header: Header, payload=()) -> int:
        """Sends `header` (numbered here if it has no id) and `payload` frames; its id."""
        if header.id == 0:
            self.next_id += 1
            header.id = self.next_id
        self.socket.send_multipart([header.encode(), *payload])
        return header.id

    def receive(self, timeout_ms: int = TIMEOUT_MS):
        """The next message's header (its payload frames in .payload), or None."""
        if not self.socket.poll(timeout_ms, zmq.POLLIN):
            return None
        frames = self.socket.recv_multipart()
        header = Header.decode(frames[0])
        header.payload = frames[1:]
        return header

    def answer(self, kind: int, id: int, timeout_ms: int = TIMEOUT_MS):
        """The next message of `kind` with `id`, skipping others; None if none in time."""
        until = time.monotonic() + timeout_ms / 1000
        while True:
            left = int((until - time.monotonic()) * 1000)
            if left <= 0:
                return None
            h = self.receive(left)
            if h is None:
                return None
            if h.kind == kind and h.id == id:
                return h

    def reply_to(self, id: int):
        return self.answer(REPLY, id)

    def hello(self, name: str) -> bool:
        return self.answer(WELCOME, self.send(Header(HELLO, hello_name=name))) is not None

    def sync(self) -> int:
        """Sends a HEARTBEAT and waits for its answer: the broker handles one connection's
        messages in order, so every message sent before it has been handled, and whatever the
        broker sent this peer before has been received. The number of those other messages."""
        id = self.send(Header(HEARTBEAT))
        others = 0
        while True:
            got = self.receive()
            assert got is not None, "the broker did not answer a HEARTBEAT"
            if got.kind == HEARTBEAT and got.id == id:
                return others
            others += 1


def unread(first: RawPeer, peer: RawPeer) -> int:
    """Messages `peer` received and has not read, once the broker handled everything
    `first` sent before (`first` having nothing unread itself)."""
    assert first.sync() == 0
    return peer.sync()


def expect(peer: RawPeer, kind: int, id: int, payload=None) -> Header:
    """The next message `peer` receives: `kind`, `id`, and `payload` as its one payload frame
    unless `payload` is None."""
    h = peer.receive()
    assert h is not None, f"nothing received (expected {KIND_NAMES[kind]} {id})"
    assert (h.kind, h.id) == (kind, id), h
    if payload is not None:
        assert h.payload == [payload], h
    return h


def request(service: str, method: str, timeout_ms: int = 10000, **fields) -> Header:
    return Header(REQUEST, service=service, method=method, timeout_ms=timeout_ms, **fields)


def stream_request(credit: int) -> Header:
    """A stream whose caller grants `credit` bytes (a chunk costs cost(its bytes))."""
    return request("streamer", "numbers", stream=True, credit=credit)


def cost(payload: bytes) -> int:
    """What a chunk costs of a stream's credit: its bytes plus 64 (wire::chunk_cost)."""
    return len(payload) + 64


class Bus:
    """A raw instance of service "streamer" (methods "numbers" and "one", max_inflight 1), a
    raw caller and a raw observer that reads the broker's counters."""

    def __init__(self, endpoint: str):
        self.context = zmq.Context()
        self.peers = []
        try:
            self.instance = self.peer(endpoint)
            self.caller = self.peer(endpoint)
            self.observer = self.peer(endpoint)
            assert self.instance.hello("py-stream-instance")
            registered = self.instance.reply_to(self.instance.send(Header(
                REGISTER, service="streamer", methods=["numbers", "one"], max_inflight=1)))
            assert registered is not None and registered.status == OK, registered
            assert self.caller.hello("py-stream-caller")
            assert self.observer.hello("py-stream-observer")
        except BaseException:
            self.close()
            raise

    def peer(self, endpoint: str) -> RawPeer:
        p = RawPeer(self.context, endpoint)
        self.peers.append(p)
        return p

    def close(self):
        for p in self.peers:
            p.close()
        self.context.term()

    def call(self, header: Header, payload=()):
        """Sends `header` from the caller; (its id, the REQUEST the instance is given)."""
        id = self.caller.send(header, payload)
        given = self.instance.receive()
        assert given is not None and given.kind == REQUEST, given
        return id, given

    def chunk(self, dispatch_id: int, payload: bytes):
        self.instance.send(Header(CHUNK, dispatch_id), [payload])

    def reply(self, dispatch_id: int, payload: bytes):
        self.instance.send(Header(REPLY, dispatch_id), [payload])

    def counters(self) -> dict:
        """The broker's counters, from "$broker" "status" (an admin.BrokerStatus)."""
        answer = self.observer.reply_to(self.observer.send(request("$broker", "status")))
        assert answer is not None and answer.status == OK, answer
        assert len(answer.payload) == 1
        status = decode_fields(answer.payload[0])
        counters = decode_fields(status[STATUS_COUNTERS][0]) if STATUS_COUNTERS in status else {}
        return {name: counters.get(number, [0])[-1] for name, number in COUNTER_FIELDS.items()}

    def plain_call_works(self, client):
        """A plain call from the Python client reaches the raw instance and its reply comes
        back: nothing was disturbed."""
        future = client.call_async("streamer", "one", b"plain", timeout=10)
        given = self.instance.receive()
        assert given is not None and given.kind == REQUEST, given
        assert not given.stream and given.credit == 0
        assert given.payload == [b"plain"]
        self.reply(given.id, b"plain answer")
        assert future.result(timeout=10) == b"plain answer"


@pytest.fixture
def bus(broker):
    b = Bus(broker.endpoint)
    yield b
    b.close()


# ---------------------------------------------------------------------------------------
# The cases.


def test_a_chunk_after_the_final_reply_is_refused_and_counted(bus, client):
    before = bus.counters()
    id, given = bus.call(stream_request(4))
    assert given.stream and given.credit == 4
    bus.chunk(given.id, b"c1")
    bus.reply(given.id, b"done")
    expect(bus.caller, CHUNK, id, b"c1")
    assert expect(bus.caller, REPLY, id, b"done").status == OK

    # The call is gone: a chunk after the final REPLY names nothing.
    bus.chunk(given.id, b"after the end")
    assert unread(bus.instance, bus.caller) == 0
    after = bus.counters()
    assert after["rejected_chunks"] == before["rejected_chunks"] + 1
    assert after["chunks"] == before["chunks"] + 1
    assert after["streams"] == before["streams"] + 1
    bus.plain_call_works(client)


def test_a_chunk_for_a_call_that_is_not_a_stream_is_refused_and_its_reply_arrives(bus, client):
    before = bus.counters()
    id, given = bus.call(request("streamer", "one"), [b"one please"])
    assert not given.stream and given.credit == 0
    assert given.payload == [b"one please"]
    bus.chunk(given.id, b"not asked for")
    assert unread(bus.instance, bus.caller) == 0
    assert bus.counters()["rejected_chunks"] == before["rejected_chunks"] + 1
    bus.reply(given.id, b"the one reply")
    assert expect(bus.caller, REPLY, id, b"the one reply").status == OK
    assert unread(bus.instance, bus.caller) == 0
    assert bus.counters()["chunks"] == before["chunks"]
    bus.plain_call_works(client)


def test_a_cancel_for_an_unknown_call_is_counted_and_answered_with_nothing(bus, client):
    before = bus.counters()
    id, given = bus.call(stream_request(4))
    bus.caller.send(Header(CANCEL, 987654321))
    assert unread(bus.caller, bus.instance) == 0  # the instance hears nothing
    assert bus.caller.sync() == 0                  # nor the caller
    assert bus.counters()["rejected_cancels"] == before["rejected_cancels"] + 1

    # The stream goes on, and the connection keeps working.
    bus.chunk(given.id, b"still streaming")
    expect(bus.caller, CHUNK, id, b"still streaming")
    bus.reply(given.id, b"")
    assert expect(bus.caller, REPLY, id).status == OK

    # Its call ended: a CANCEL for it now names nothing either.
    bus.caller.send(Header(CANCEL, id))
    assert unread(bus.caller, bus.instance) == 0
    after = bus.counters()
    assert after["rejected_cancels"] == before["rejected_cancels"] + 2
    assert after["cancelled"] == before["cancelled"]

    # A new call from the same raw caller is served as usual.
    next_id, next_given = bus.call(request("streamer", "one"), [b"again"])
    bus.reply(next_given.id, b"served")
    assert expect(bus.caller, REPLY, next_id, b"served").status == OK
    bus.plain_call_works(client)


def test_a_chunk_beyond_the_callers_credit_is_refused_and_the_stream_goes_on(bus, client):
    before = bus.counters()
    window = cost(b"c1") + cost(b"c2")
    id, given = bus.call(stream_request(window))
    assert given.stream and given.credit == window
    bus.chunk(given.id, b"c1")
    bus.chunk(given.id, b"c2")
    bus.chunk(given.id, b"beyond the credit")
    expect(bus.caller, CHUNK, id, b"c1")
    expect(bus.caller, CHUNK, id, b"c2")
    assert unread(bus.instance, bus.caller) == 0
    assert bus.counters()["rejected_chunks"] == before["rejected_chunks"] + 1

    # The refused chunk disturbed nothing: more credit, more chunks.
    more = cost(b"c3") + cost(b"c4")
    bus.caller.send(Header(CREDIT, id, credit=more))
    assert expect(bus.instance, CREDIT, given.id).credit == more
    bus.chunk(given.id, b"c3")
    bus.chunk(given.id, b"c4")
    expect(bus.caller, CHUNK, id, b"c3")
    expect(bus.caller, CHUNK, id, b"c4")
    bus.reply(given.id, b"done")
    assert expect(bus.caller, REPLY, id, b"done").status == OK
    assert unread(bus.instance, bus.caller) == 0

    after = bus.counters()
    assert after["rejected_chunks"] == before["rejected_chunks"] + 1
    assert after["chunks"] == before["chunks"] + 4
    assert after["streams"] == before["streams"] + 1
    assert after["rejected_credits"] == before["rejected_credits"]
    bus.plain_call_works(client)
