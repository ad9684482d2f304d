#!/usr/bin/python3
"""python_bench.py: the Python client against the C++ SDK, in one run, on one broker and
one echo service.

It starts sage-busd and the C++ example echo service (handlers on its I/O thread, as
sage-bus-bench's own echo) on a free 127.0.0.1 port, then, for --rounds rounds,
alternating: the C++ SDK through `sage-bus-bench --endpoint` (reqrep_c1, and pipelined:
64 calls in flight), and the Python client doing the same work three ways: sync calls
one at a time (py_c1), call_async with 100 in flight (py_async100), and asyncio with
1,000 in flight (py_asyncio1000). It prints one line per measurement and the medians,
with the ratios docs/benchmarks.md quotes: py_c1 / C++ reqrep_c1, py_asyncio1000 / C++
pipelined. Run from the source tree after a build:

    PYTHONPATH=build/python /usr/bin/python3 tools/bench/python_bench.py --build build
"""
import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import sagebus

SERVICE, METHOD = "bench-echo", "echo"
PAYLOAD = b"x" * 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(process: subprocess.Popen, log: str, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with open(log, errors="replace") as f:
            if text in f.read():
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"python_bench: {process.args[0]} did not say {text!r}; see {log}")
        time.sleep(0.01)


def py_c1(client: sagebus.Client, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        if client.call(SERVICE, METHOD, PAYLOAD, timeout=10) != PAYLOAD:
            raise SystemExit("python_bench: an echo came back different")
    return calls / (time.perf_counter() - start)


def py_async(client: sagebus.Client, calls: int, depth: int) -> float:
    """call_async with `depth` in flight: each completion issues the next."""
    done = threading.Event()
    lock = threading.Lock()
    state = {"issued": 0, "finished": 0, "failed": None}

    def issue() -> None:
        client.call_async(SERVICE, METHOD, PAYLOAD, timeout=10).add_done_callback(finished)

    def finished(future) -> None:
        if future.exception() is not None:
            state["failed"] = future.exception()
        with lock:
            state["finished"] += 1
            more = state["issued"] < calls
            if more:
                state["issued"] += 1
            if state["finished"] == calls:
                done.set()
        if more:
            issue()

    start = time.perf_counter()
    state["issued"] = min(depth, calls)
    for _ in range(state["issued"]):
        issue()
    if not done.wait(120):
        raise SystemExit("python_bench: call_async did not finish within 120 s")
    if state["failed"] is not None:
        raise SystemExit(f"python_bench: a call failed: {state['failed']}")
    return calls / (time.perf_counter() - start)


def py_asyncio(client: sagebus.Client, calls: int, depth: int) -> float:
    async def worker(n: int) -> None:
        for _ in range(n):
            if await client.acall(SERVICE, METHOD, PAYLOAD, timeout=10) != PAYLOAD:
                raise SystemExit("python_bench: an echo came back different")

    async def main() -> float:
        start = time.perf_counter()
        share, extra = divmod(calls, depth)
        await asyncio.gather(*(worker(share + (i < extra)) for i in range(depth)))
        return calls / (time.perf_counter() - start)

    return asyncio.run(main())


def cpp(bench: str, endpoint: str, scenario: str, calls: int) -> float:
    out = subprocess.run([bench, "--endpoint", endpoint, "--scenario", scenario,
                          "--calls", str(calls)], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"python_bench: sage-bus-bench failed:\n{out.stderr}")
    for word in out.stdout.split():
        if word.startswith("ops_per_s="):
            return float(word.split("=", 1)[1])
    raise SystemExit(f"python_bench: no ops_per_s in {out.stdout!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build", help="the build directory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20000,
                        help="calls per c1 measurement; 5x for the others, as pipelined")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny counts, one round: every measurement must complete")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.calls = 1, 200
    busd = os.path.join(args.build, "daemon", "sage-busd")
    echo = os.path.join(args.build, "examples", "sagebus-echo-service")
    bench = os.path.join(args.build, "tools", "bench", "sage-bus-bench")
    logs = tempfile.mkdtemp(prefix="python-bench-")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    children = []
    try:
        busd_log = os.path.join(logs, "sage-busd.log")
        children.append(subprocess.Popen([busd, "--endpoint", endpoint],
                                         stdout=open(busd_log, "w"), stderr=subprocess.STDOUT))
        wait_for(children[-1], busd_log, "listening on", 30)
        echo_log = os.path.join(logs, "echo.log")
        children.append(subprocess.Popen(
            [echo, "--endpoint", endpoint, "--name", SERVICE, "--max-inflight", "1024",
             "--on-io-thread"], stdout=open(echo_log, "w"), stderr=subprocess.STDOUT))
        wait_for(children[-1], echo_log, "ready", 30)
        results = {k: [] for k in ("cpp_c1", "cpp_pipelined", "py_c1", "py_async100",
                                   "py_asyncio1000")}
        with sagebus.Client(endpoint, name="python-bench") as client:
            if not client.wait_connected(10):
                raise SystemExit(f"python_bench: no connection to {endpoint}")
            for r in range(args.rounds):
                measured = {
                    "cpp_c1": cpp(bench, endpoint, "reqrep_c1", args.calls),
                    "py_c1": py_c1(client, args.calls),
                    "cpp_pipelined": cpp(bench, endpoint, "pipelined", args.calls),
                    "py_async100": py_async(client, 5 * args.calls, 100),
                    "py_asyncio1000": py_asyncio(client, 5 * args.calls, 1000),
                }
                for name, value in measured.items():
                    results[name].append(value)
                    print(f"round={r + 1} measurement={name} ops_per_s={value:.0f}",
                          file=sys.stderr)
        med = {k: statistics.median(v) for k, v in results.items()}
        for name, value in med.items():
            print(f"measurement={name} ops_per_s={value:.0f}")
        print(f"ratio py_c1/cpp_c1={med['py_c1'] / med['cpp_c1']:.2f} "
              f"py_asyncio1000/cpp_pipelined={med['py_asyncio1000'] / med['cpp_pipelined']:.2f} "
              f"py_async100/cpp_pipelined={med['py_async100'] / med['cpp_pipelined']:.2f}")
    finally:
        for child in reversed(children):
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
