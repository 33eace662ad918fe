"""A real MLflow tracking server and MLflow's own client, run from the MLflow venv as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import free_port
from tests.mlflow_venv import mlflow_python

CLIENT_SCRIPT = r"""
import json, sys, mlflow
from mlflow import MlflowClient
mode, uri = sys.argv[1], sys.argv[2]
mlflow.set_tracking_uri(uri)
if mode == "log":
    n = int(sys.argv[3])
    mlflow.set_experiment("tracewatch-sink")
    @mlflow.trace(span_type="AGENT")
    def agent(q):
        with mlflow.start_span("retrieve", span_type="RETRIEVER") as s:
            s.set_inputs({"q": q}); s.set_outputs([{"page_content": "doc about " + q}])
        return "answer to " + q + " with several words in it"
    ids = []
    for i in range(n):
        agent(f"question {i}")
        ids.append(mlflow.get_last_active_trace_id())
    mlflow.flush_trace_async_logging()
    import time
    for t in ids:
        for _ in range(150):  # the export is asynchronous: "not fully exported yet" for a moment
            tr = mlflow.get_trace(t)
            if tr is not None:
                break
            time.sleep(0.2)
        print(tr.to_json())
elif mode == "experiment":
    print(mlflow.set_experiment(sys.argv[3]).experiment_id)
elif mode == "read":
    c = MlflowClient()
    out = {}
    for t in json.loads(sys.stdin.read()):
        try:
            info = c.get_trace(t).info
        except Exception:
            out[t] = None; continue
        out[t] = [a.to_dictionary() | {"kind": type(a).__name__} for a in info.assessments]
    print(json.dumps(out, default=str))
elif mode == "search":
    c = MlflowClient(); out = {}; token = None
    while True:
        page = c.search_traces(locations=[sys.argv[3]], max_results=500, page_token=token, include_spans=False)
        for tr in page:
            out[tr.info.trace_id] = [a.to_dictionary() | {"kind": type(a).__name__} for a in tr.info.assessments]
        token = page.token
        if not token:
            break
    print(json.dumps(out, default=str))
elif mode == "log_feedback":
    from mlflow.entities import AssessmentSource
    items = json.loads(sys.stdin.read())
    import time
    t0 = time.perf_counter()
    for it in items:
        mlflow.log_feedback(trace_id=it["trace_id"], name=it["name"], value=it["value"], rationale=it.get("rationale"),
                            source=AssessmentSource("CODE", it["source_id"]), metadata=it.get("metadata"))
    print(json.dumps({"seconds": time.perf_counter() - t0, "n": len(items)}))
"""


class MlflowServer:
    """`mlflow server` on loopback with a SQLite store in `root`; stop and start it again at will."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        py = mlflow_python()
        if py is None:
            raise RuntimeError("no MLflow venv")
        self.python = Path(py)
        self.root = root
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.script = root / "mlflow_client.py"
        self.script.write_text(CLIENT_SCRIPT)

    def start(self, timeout: float = 120.0) -> None:
        mlflow_bin = self.python.parent / "mlflow"
        self._log = log = open(self.root / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(mlflow_bin),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root}/mlflow.db",
                "--default-artifact-root",
                str(self.root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=log,
            cwd=self.root,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.uri}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("mlflow server did not become healthy")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def client(self, mode: str, *args: str, stdin: Any = None, timeout: float = 600) -> str:
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.uri}
        done = subprocess.run(
            [str(self.python), str(self.script), mode, self.uri, *args],
            input=None if stdin is None else json.dumps(stdin),
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mlflow client {mode} failed: {done.stderr[-3000:]}")
        return done.stdout

    def read(self, trace_ids: list[str]) -> dict[str, list[dict[str, Any]] | None]:
        """Each trace's assessments as MLflow's own client returns them (None: no such trace)."""
        return dict(json.loads(self.client("read", stdin=trace_ids)))

    def search(self, experiment_id: str) -> dict[str, list[dict[str, Any]]]:
        return dict(json.loads(self.client("search", experiment_id)))
