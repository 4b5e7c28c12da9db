"""A real ``prefect server start`` on loopback with basic auth, deployments and a process worker.

``metascreen serve`` starts the stack; the test registers nothing by hand: it triggers the
``retrain-molecules`` deployment from deploy/prefect.yaml through the REST API (with a tiny
budget), waits for the worker to run it, checks the registry it promoted into, that requests
without the credential get 401, and that SIGTERM stops worker and server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metascreen.pipelines.stack import api_json, free_port, http_status, run_deployment_and_wait

pytestmark = pytest.mark.integration

AUTH = "metascreen:test-only-secret"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _events_socket_accepts(port: int, token: str | None) -> bool:
    """Whether the events websocket completes Prefect's auth handshake with ``token``."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{port}/api/events/out"
    try:
        with connect(url, subprotocols=["prefect"], open_timeout=10) as ws:  # type: ignore[list-item]
            ws.send(json.dumps({"type": "auth", "token": token}))
            return bool(json.loads(ws.recv(timeout=10)).get("type") == "auth_success")
    except (ConnectionClosed, InvalidStatus):
        return False


def test_serve_runs_a_deployment_with_basic_auth(tiny_fsmol: Path, tmp_path: Path) -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    registry = tmp_path / "registry"
    env = {
        **os.environ,
        "PREFECT_SERVER_API_AUTH_STRING": AUTH,
        "METASCREEN_FSMOL_DIR": str(tiny_fsmol),
        "METASCREEN_REGISTRY": str(registry),
    }
    env.pop("PREFECT_API_URL", None)
    serve = subprocess.Popen(
        [str(Path(sys.executable).parent / "metascreen"), "serve", "--port", str(port)]
        + ["--home", str(tmp_path / "prefect-home"), "--log-dir", str(tmp_path / "logs")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        line = b""
        while time.monotonic() < deadline and b"prefect server:" not in line:
            line = serve.stdout.readline() if serve.stdout else b""
            assert serve.poll() is None, (line + serve.stdout.read()).decode()[-3000:]  # type: ignore[union-attr]
        assert b"127.0.0.1" in line

        # The API refuses requests without the credential and serves them with it.
        assert http_status(f"{api}/flow_runs/filter", method="POST", body=b"{}") == 401
        assert http_status(f"{api}/flow_runs/filter", "wrong:secret", "POST", b"{}") == 401
        assert http_status(f"{api}/flow_runs/filter", AUTH, "POST", b"{}") == 200
        # Prefect issue #17687 (events websocket outside the HTTP auth check) is fixed in the
        # installed version: the socket's own auth message is checked against the same secret.
        assert not _events_socket_accepts(port, None)
        assert not _events_socket_accepts(port, "wrong:secret")
        assert _events_socket_accepts(port, AUTH)
        deps = api_json(f"{api}/deployments/filter", AUTH, "POST", {})
        names = {d["name"] for d in deps}
        assert names >= {
            "retrain-molecules",
            "batch-score-molecules",
            "evaluate-molecules",
            "simulate-molecules",
            "train-policy",
        }
        retrain = next(d for d in deps if d["name"] == "retrain-molecules")
        assert retrain["schedules"][0]["schedule"]["cron"] == "0 2 * * *"

        run = run_deployment_and_wait(
            api,
            "retrain/retrain-molecules",
            {
                "learner": {"learner": "protonet", "encoder": {"hidden": [64], "out_dim": 32}},
                "train": {"steps": 20, "eval_every": 10, "device": "cpu"},
                "support_sizes": [8],
                "repeats": 2,
                "cache_dir": None,
            },
            auth=AUTH,
            timeout=240,
        )
        logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
        assert run["state"]["type"] == "COMPLETED", logs[-4000:]
        decisions = [
            json.loads(x)
            for x in (registry / "molecules" / "decisions.jsonl").read_text().splitlines()
        ]
        assert decisions[-1]["action"] == "gate" and decisions[-1]["promote"] is True
        assert os.readlink(registry / "molecules" / "current") == "v0001"
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(10)
            pytest.fail("metascreen serve did not stop on SIGTERM")
    assert serve.returncode == 0
    time.sleep(0.5)
    assert not _listening(port)
