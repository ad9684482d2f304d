"""Durable legacy queues from Python (sage-busd --store): what put() confirmed survives
the broker's SIGKILL, an item handed out and not acknowledged comes back marked
redelivered, and a transient queue keeps nothing."""
import queue
import time

import pytest

import sagebus
from conftest import Broker


def test_a_durable_queue_survives_the_brokers_sigkill(tmp_path):
    store = str(tmp_path / "store.db")
    broker = Broker("--store", store, "--heartbeat-ms", "200")
    try:
        with sagebus.Client(broker.endpoint) as c:
            jobs = sagebus.LegacyQueue(c, "jobs")
            scratch = sagebus.LegacyQueue(c, "scratch", transient=True)
            for i in range(3):
                jobs.put(f"job-{i}".encode())
            scratch.put(b"gone with the broker")
            assert jobs.get(timeout=5) == b"job-0"  # handed out, never acknowledged

            broker.kill()
            broker = Broker("--store", store, endpoint=broker.endpoint)

            assert jobs.get_item(timeout=10) == (b"job-0", True, 2)
            jobs.task_done()
            item = jobs.get_item(timeout=5)
            assert (item.data, item.redelivered, item.deliveries) == (b"job-1", False, 1)
            assert jobs.get(timeout=5) == b"job-2"
            with pytest.raises(queue.Empty):
                scratch.get(timeout=0.2)
    finally:
        broker.stop()


def test_a_durable_queue_with_items_cannot_become_transient(tmp_path):
    broker = Broker("--store", str(tmp_path / "store.db"))
    try:
        with sagebus.Client(broker.endpoint) as c:
            sagebus.LegacyQueue(c, "jobs").put(b"x")
            with pytest.raises(sagebus.InvalidArgument, match="busctl queue purge jobs"):
                sagebus.LegacyQueue(c, "jobs", transient=True)
    finally:
        broker.stop()


def test_nack_and_ttl(tmp_path):
    broker = Broker("--store", str(tmp_path / "store.db"))
    try:
        with sagebus.Client(broker.endpoint) as c:
            q = sagebus.LegacyQueue(c, "jobs")
            q.put(b"gone soon", ttl=0.05)
            q.put(b"kept")
            # The first is removed 50 ms after its put; nothing is waiting for it.
            deadline = time.monotonic() + 5
            while q.qsize() != 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert q.get(timeout=5) == b"kept"
            q.nack()
            assert q.get_item(timeout=5) == (b"kept", True, 2)
    finally:
        broker.stop()
