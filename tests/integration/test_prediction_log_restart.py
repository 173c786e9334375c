"""`keiko serve --replicas 2` stopped by SIGTERM and started again, under traffic: every row it answered is in
the prediction log, once."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from keiko.warehouse import DuckDBWarehouse

pytestmark = pytest.mark.server


def two_free_ports() -> int:
    """A port p with p and p + 1 free on loopback (`keiko serve --replicas 2 --port p` takes both)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports")


def wait_ready(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 90  # a hang guard, not a timing assertion
    while time.monotonic() < deadline:
        assert process.poll() is None, f"keiko serve exited with {process.returncode}"
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within 90 s")


class Traffic:
    """Requests to every replica in turn, each with its own request id, until stopped or refused."""

    def __init__(self, urls: list[str], row: dict, prefix: str) -> None:
        self.urls, self.row, self.prefix = urls, row, prefix
        self.answered: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        clients = [httpx.Client(base_url=url, timeout=30) for url in self.urls]
        refused = set()
        n = 0
        while not self.stop.is_set() and len(refused) < len(clients):
            n += 1
            replica = n % len(clients)
            request_id = f"{self.prefix}-{n}"
            try:
                response = clients[replica].post("/predict", json={"request_id": request_id, "rows": [self.row]})
            except httpx.TransportError:
                refused.add(replica)
                continue
            if response.status_code == 200:
                self.answered.append(request_id)


def serve(port: int, env: dict) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "keiko",
        "serve",
        "--model",
        "ctr",
        "--no-grpc",
        "--replicas",
        "2",
        "--port",
        str(port),
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_no_answered_row_is_lost_across_a_graceful_restart(run_home, one_row):
    env = {**os.environ, "KEIKO_MODEL_VERSION": "1"}  # v1 is registered, not deployed: pin it
    port = two_free_ports()
    urls = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
    answered: list[str] = []
    for attempt in ("first", "second"):
        process = serve(port, env)
        for url in urls:
            wait_ready(url, process)
        traffic = Traffic(urls, one_row[0], attempt)
        traffic.thread.start()
        while len(traffic.answered) < 200 and traffic.thread.is_alive():
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)  # mid-traffic: requests keep coming until the replicas refuse them
        assert process.wait(timeout=60) == 0
        traffic.stop.set()
        traffic.thread.join(timeout=60)
        answered += traffic.answered

    logged = DuckDBWarehouse(run_home / "served").query("SELECT request_id FROM predictions").column(0).to_pylist()
    assert len(answered) >= 400
    assert sorted(logged) == sorted(answered)  # every answered row, once; none that was not answered
