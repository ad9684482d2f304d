"""Fixtures of the Python client's tests: a real sage-busd on a free loopback port.

SAGEBUS_BUSD names the sage-busd binary (CTest sets it, and PYTHONPATH to the build's
python/); every broker started is stopped, every wait is bounded.
"""
import os
import select
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

import sagebus

BUSD = os.environ.get("SAGEBUS_BUSD", "")


def eventually(condition, timeout=5.0):
    """Whether `condition()` holds within `timeout` seconds (asked every 10 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def python(code: str, *args: str, **popen) -> subprocess.Popen:
    """A child Python running `code`, with this one's sagebus on its path; its stdout and
    stderr are pipes (bytes unless `popen` says text=True)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def wait_for_line(child: subprocess.Popen, text: str, timeout: float) -> bool:
    """Reads the child's stdout until `text` is in it; False at EOF or after `timeout`."""
    deadline = time.monotonic() + timeout
    seen = b""
    fd = child.stdout.fileno()
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            more = os.read(fd, 4096)
            if not more:
                return False
            seen += more
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A running sage-busd; .endpoint, .log(), stop()."""

    def __init__(self, *args: str, endpoint: str = ""):
        """sage-busd with `args`, on `endpoint` (default: a free loopback port)."""
        if not BUSD:
            pytest.fail("SAGEBUS_BUSD must name the sage-busd binary (ctest sets it)")
        self.endpoint = endpoint or f"tcp://127.0.0.1:{free_port()}"
        self._log = tempfile.NamedTemporaryFile(prefix="sage-busd-", suffix=".log", delete=False)
        self.process = subprocess.Popen([BUSD, "--endpoint", self.endpoint, *args],
                                        stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while "listening on" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"sage-busd did not start listening on {self.endpoint}:\n{self.log()}")
            time.sleep(0.01)

    def log(self) -> str:
        with open(self._log.name, errors="replace") as f:
            return f.read()

    def kill(self) -> None:
        """SIGKILL: the broker dies at once, as in a crash."""
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        os.unlink(self._log.name)


@pytest.fixture
def broker():
    b = Broker()
    yield b
    b.stop()


@pytest.fixture
def client(broker):
    with sagebus.Client(broker.endpoint) as c:
        assert c.wait_connected(10), f"no connection to {broker.endpoint}"
        yield c


@pytest.fixture
def echo(broker):
    """A Python echo service on its own client: methods echo, upper, fail."""
    with sagebus.Client(broker.endpoint, name="py-echo") as c:
        service = sagebus.Service(c, "echo", max_inflight=64)
        service.handle("echo", lambda r: r.payload)
        service.handle("upper", lambda r: r.payload.upper())

        @service.method("fail")
        def fail(request):
            raise ValueError("bad input: " + request.payload.decode())

        service.start(wait=10)
        yield service
        service.stop()
