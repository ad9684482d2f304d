"""examples/python/ runs as docs/python.md says: the echo service and caller, and the
three-stage pipeline."""
import os
import subprocess
import sys

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "python")


def example(name: str, *args: str, **kwargs):
    return [sys.executable, os.path.join(EXAMPLES, name), *args]


def test_the_echo_service_and_caller(broker):
    service = subprocess.Popen(example("echo_service.py", "--endpoint", broker.endpoint),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert service.stdout.readline().strip() == "ready"
        out = subprocess.run(example("echo_caller.py", "--endpoint", broker.endpoint, "hi there"),
                             capture_output=True, text=True, timeout=30)
        assert (out.returncode, out.stdout) == (0, "hi there\n"), out.stderr
        out = subprocess.run(example("echo_caller.py", "--endpoint", broker.endpoint,
                                     "--service", "nobody", "--timeout", "0.5"),
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 1
        assert out.stderr.startswith("DEADLINE_EXCEEDED: ")
    finally:
        service.terminate()
        _, err = service.communicate(timeout=20)
    assert service.returncode == 0, err


def test_the_pipeline_calls_a_stage_from_inside_a_handler(broker):
    out = subprocess.run(example("pipeline.py", "--endpoint", broker.endpoint,
                                 "keys for clients"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    assert all(line in ("the broker routes calls", "queues survive a crash",
                        "keys authenticate clients", "streams carry tokens") for line in lines)
