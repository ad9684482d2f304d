"""What Python processes rely on: Ctrl-C interrupts a blocking call, a forked child
cannot use its parent's client, the interpreter exits cleanly with everything open, and
C++ and Python call each other."""
import os
import signal
import subprocess
import threading
import time

import pytest

import sagebus

from conftest import BUSD, python


def test_ctrl_c_interrupts_a_blocking_call(broker):
    # A service that answers only when told; the child calls it with a long timeout.
    entered, release = threading.Event(), threading.Event()

    def hold(request):
        entered.set()
        release.wait(30)
        return b""

    with sagebus.Client(broker.endpoint) as c:
        hang = sagebus.Service(c, "hang")
        hang.handle("m", hold)
        hang.start(wait=10)
        child = python("""
            import sys, sagebus
            with sagebus.Client(sys.argv[1]) as c:
                assert c.wait_connected(10)
                try:
                    c.call("hang", "m", timeout=60)
                except KeyboardInterrupt:
                    print("interrupted", flush=True)
        """, broker.endpoint, text=True)
        try:
            assert entered.wait(20), "the child's call never reached the service"
            sent = time.monotonic()
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=20)
            assert "interrupted" in out, err
            assert time.monotonic() - sent < 5
            assert child.returncode == 0, err
        finally:
            release.set()
            hang.stop()


def test_a_forked_child_must_make_its_own_client(client, echo):
    assert client.call("echo", "echo", b"parent") == b"parent"
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status, never return to pytest
        code = 1
        try:
            try:
                client.call("echo", "echo", b"child")
            except sagebus.InvalidArgument as e:
                if "fork" in str(e):
                    with sagebus.Client(client.endpoint) as own:
                        if own.call("echo", "echo", b"own", wait_for_ready=True) == b"own":
                            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert client.call("echo", "echo", b"still mine") == b"still mine"


def test_the_interpreter_exits_cleanly_with_everything_open(broker, echo):
    child = python("""
        import sys, sagebus
        c = sagebus.Client(sys.argv[1])
        assert c.wait_connected(10)
        s = sagebus.Service(c, "leftover")
        s.handle("m", lambda r: r.payload)
        s.start(wait=10)
        sub = c.subscribe("x.>", lambda m: None)
        it = c.subscribe("y.>")
        q = sagebus.LegacyQueue(c, "q")
        pending = c.call_async("echo", "echo", b"in flight")
        print(c.call("leftover", "m", b"ok").decode(), flush=True)
        # exits here, nothing closed
    """, broker.endpoint, text=True)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert out.strip() == "ok"
    assert "Traceback" not in err and "Fatal" not in err, err


def test_cpp_and_python_call_each_other(broker, client, echo):
    examples = os.path.join(os.path.dirname(BUSD), "..", "examples")
    caller = os.path.join(examples, "sagebus-echo-caller")
    service = os.path.join(examples, "sagebus-echo-service")
    if not (os.path.exists(caller) and os.path.exists(service)):
        pytest.fail(f"the C++ examples are not built beside {BUSD}")
    # The C++ caller calls the Python echo service.
    out = subprocess.run([caller, "--endpoint", broker.endpoint, "--service", "echo", "from-c++"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "from-c++" in out.stdout
    # The Python caller calls a C++ service.
    cpp = subprocess.Popen([service, "--endpoint", broker.endpoint, "--name", "cpp-echo"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert client.call("cpp-echo", "echo", b"from python", wait_for_ready=True,
                           timeout=10) == b"from python"
        with pytest.raises(sagebus.HandlerError):
            client.call("cpp-echo", "fail", b"x")
    finally:
        cpp.terminate()
        cpp.wait(timeout=10)
