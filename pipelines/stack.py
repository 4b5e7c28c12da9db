"""A local Prefect stack: ``prefect server start`` on loopback, a work pool, deployments, a worker.

``LocalStack`` runs a real ``prefect server start`` on 127.0.0.1, a process work pool, the
deployments of ``deploy/prefect.yaml`` and a worker — what ``metascreen serve`` starts and the
integration test drives. Prefect runs in child processes (``python -m prefect``); this module
does not import it.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from metascreen.domains.errors import MetascreenError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
PREFECT_FILE = REPO_ROOT / "deploy" / "prefect.yaml"
LOCALHOST = "127.0.0.1"


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def basic_auth_header(auth: str) -> dict[str, str]:
    """``Authorization`` header for Prefect's basic auth (``user:password``)."""
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


def http_status(
    url: str, auth: str | None = None, method: str = "GET", body: bytes | None = None
) -> int:
    """HTTP status of one request (no exception on 4xx/5xx)."""
    headers = {"Content-Type": "application/json", **(basic_auth_header(auth) if auth else {})}
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def api_json(
    url: str, auth: str | None = None, method: str = "GET", payload: Any = None, retries: int = 6
) -> Any:
    """JSON answer of one Prefect API request; raises ``StackError`` on an HTTP error.

    Like Prefect's own client, retries 429/502/503 (a busy SQLite database answers 503) with
    exponential back-off.
    """
    import json

    body = json.dumps(payload).encode() if payload is not None else None
    headers = {"Content-Type": "application/json", **(basic_auth_header(auth) if auth else {})}
    for attempt in range(retries + 1):
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            if err.code in (429, 502, 503) and attempt < retries:
                logger.info("%s %s: HTTP %d, retrying", method, url, err.code)
                time.sleep(min(2.0**attempt, 10.0))
                continue
            raise StackError(f"{method} {url}: HTTP {err.code}") from err
    raise AssertionError("unreachable")


def run_deployment_and_wait(
    api_url: str,
    deployment: str,
    parameters: dict[str, Any] | None = None,
    auth: str | None = None,
    timeout: float = 300,
) -> dict[str, Any]:
    """Trigger ``flow-name/deployment-name`` through the REST API and wait for a final state."""
    dep = api_json(f"{api_url}/deployments/name/{deployment}", auth)
    run = api_json(
        f"{api_url}/deployments/{dep['id']}/create_flow_run",
        auth,
        "POST",
        {"parameters": parameters or {}},
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api_json(f"{api_url}/flow_runs/{run['id']}", auth)
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return dict(run)
        time.sleep(0.5)
    raise StackError(f"flow run {run['id']} of {deployment} not finished after {timeout:.0f}s")


class StackError(MetascreenError):
    """A part of the local Prefect stack failed to start."""


def bootstrap_registry(root: Path, name: str | None = None) -> str | None:
    """Register and promote the shipped model when ``root`` has no version of ``name`` yet.

    So that the first scoring run against a new registry has a current model. Logged in
    ``decisions.jsonl`` as ``{"action": "bootstrap", ...}``. Returns the version created, or
    None when the registry already had one (it is then left alone).
    """
    from metascreen.models.registry.store import DEFAULT_NAME, ModelRegistry
    from metascreen.models.serving.artifact import DEFAULT_MODEL_DIR

    name = name or DEFAULT_NAME
    reg = ModelRegistry(root)
    if reg.versions(name) or reg.current_version(name) is not None:
        return None
    mv = reg.register(DEFAULT_MODEL_DIR, name, note="shipped model, registered by metascreen serve")
    reg.set_current(
        name,
        mv.version,
        {
            "action": "bootstrap",
            "reason": "empty registry: the shipped model becomes the first current version",
            "source": str(DEFAULT_MODEL_DIR),
        },
    )
    logger.info("registry %s was empty: registered the shipped model as %s", root, mv.version)
    return mv.version


@dataclass
class LocalStack:
    """``prefect server start`` on loopback + a process work pool, deployments and a worker.

    The server gets its own ``PREFECT_HOME`` (SQLite database) and, with ``auth`` set, Prefect's
    basic auth (``PREFECT_SERVER_API_AUTH_STRING``); every client process started here gets the
    matching ``PREFECT_API_AUTH_STRING``. ``stop`` ends the worker before the server.
    """

    home: Path
    host: str = LOCALHOST
    port: int = 4200
    auth: str | None = None
    pool: str = "metascreen"
    prefect_file: Path = PREFECT_FILE
    log_dir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    server: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        """The server's API URL."""
        return f"http://{self.host}:{self.port}/api"

    def env(self) -> dict[str, str]:
        """Environment of the processes started here (client settings included)."""
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": self.host,
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_LOGGING_EXTRA_LOGGERS": "metascreen",
            "METASCREEN_HOME": str(REPO_ROOT),
            "DASK_LOGGING__DISTRIBUTED": "error",
            **self.extra_env,
        }
        for key in ("PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING"):
            env.pop(key, None)
        if self.auth:
            env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth
            env["PREFECT_API_AUTH_STRING"] = self.auth
        return env

    def _log(self, name: str) -> IO[bytes] | int:
        if self.log_dir is None:
            return subprocess.DEVNULL
        self.log_dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(fh)
        return fh

    def _prefect(self, *args: str, timeout: float = 180) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", *args],
            cwd=REPO_ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if out.returncode != 0:
            tail = (out.stdout + out.stderr).strip().splitlines()[-1:] or ["(no output)"]
            raise StackError(f"prefect {' '.join(args[:2])} failed: {tail[0]}")
        logger.debug("prefect %s: %s", " ".join(args), out.stdout.strip())

    def start_server(self, timeout: float = 90) -> None:
        """Start ``prefect server start`` and wait for ``/api/health``."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start"]
            + ["--host", self.host, "--port", str(self.port)],
            env=self.env(),
            stdout=self._log("server"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise StackError(
                    f"prefect server exited with {self.server.returncode} (port {self.port} busy?)"
                )
            with contextlib.suppress(OSError):
                if http_status(f"{self.api_url}/health") == 200:
                    logger.info("prefect server ready at %s", self.api_url)
                    return
            time.sleep(0.25)
        raise StackError(f"prefect server at {self.api_url} not healthy after {timeout:.0f}s")

    def create_pool(self) -> None:
        """Create (or update) the process work pool."""
        self._prefect("work-pool", "create", self.pool, "--type", "process", "--overwrite")

    def deploy(self, names: list[str] | None = None) -> None:
        """Register the deployments of ``prefect_file`` (all of them, or ``names``)."""
        which = [a for n in names for a in ("--name", n)] if names else ["--all"]
        self._prefect("deploy", *which, "--prefect-file", str(self.prefect_file))

    def start_worker(self) -> None:
        """Start a process worker polling the pool."""
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", self.pool]
            + ["--type", "process"],
            cwd=REPO_ROOT,
            env=self.env(),
            stdout=self._log("worker"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, deploy: bool = True, worker: bool = True) -> LocalStack:
        """Server, pool, deployments, worker; stops what it started if a step fails."""
        try:
            self.start_server()
            self.create_pool()
            if deploy:
                self.deploy()
            if worker:
                self.start_worker()
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
        """SIGTERM ``proc``, its process group and every process it started, SIGKILL after
        ``grace`` seconds. The tree matters, not only the group: Prefect starts each flow run in a
        session of its own, which a group signal misses; a flow run left behind outlives the
        stack (a CI run once found one still busy on a core half an hour after its server had
        gone)."""
        if proc is None or proc.poll() is not None:
            return
        import psutil

        try:
            tree = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        for child in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()
        deadline = time.monotonic() + grace
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        _, alive = psutil.wait_procs(tree, timeout=max(0.0, deadline - time.monotonic()))
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                logger.warning("pid %d (%s) ignored SIGTERM; killing it", child.pid, child.name())
                child.kill()
        psutil.wait_procs(alive, timeout=10)

    def stop(self) -> None:
        """Stop the worker, then the server (SIGTERM, SIGKILL after a grace period)."""
        self._terminate(self.worker, 15)
        self._terminate(self.server, 20)
        for fh in self._logs:
            fh.close()
        self._logs.clear()

    def __enter__(self) -> LocalStack:
        """Start everything."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop everything."""
        self.stop()
