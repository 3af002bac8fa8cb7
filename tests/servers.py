"""Real gunicorn servers on loopback ports for tests, always stopped within a bound."""
import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30
STOP_TIMEOUT = 30


def stop_with_the_test_run():
    """In a child, before it runs: SIGTERM once the process that started it is gone (Linux).

    pytest-timeout ends a hung run with os._exit, which runs no teardown: a server in a
    session of its own would outlive the run, still listening on its port.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def flask_cli(env, *args, timeout=60):
    """Run `flask --app potpie_flask ARGS` in a subprocess; returns stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "potpie_flask", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


def server_env(instance_path, db_settings, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("POTPIE_") and k != "DATABASE_URL"}
    env.update(db_settings)
    env.update(POTPIE_INSTANCE_PATH=str(instance_path), POTPIE_RATELIMIT_ENABLED="false")
    env.update(extra)
    return env


class Gunicorn:
    """`gunicorn wsgi:app -c gunicorn.conf.py` on a free loopback port.

    `workers=None` keeps gunicorn.conf.py's own default (or the env's WEB_CONCURRENCY).
    `root` is the checkout to serve and `app` its WSGI entry point (the benchmarks serve
    other revisions, and bench/ablation.py).
    """

    def __init__(self, env, workers=2, log_path=None, root=ROOT, app="wsgi:app"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(env, PORT=str(self.port), HOST="127.0.0.1")
        if workers is not None:
            env["WEB_CONCURRENCY"] = str(workers)
        self.log_path = log_path
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", app, "-c", "gunicorn.conf.py"],
            cwd=root, env=env, stdout=self._log, stderr=self._log, start_new_session=True,
            preexec_fn=stop_with_the_test_run)
        try:
            self._wait_ready()
        except BaseException:
            # Its own session: a Ctrl-C while it starts would leave it running.
            self.stop()
            raise

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        raise RuntimeError("gunicorn did not answer /healthz in time")

    def request(self, method, path, body=None, key=None, headers=None, timeout=30):
        """One HTTP request; returns (status, parsed JSON or None, headers)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if key:
            req.add_header("x-api-key", key)
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw, status, hdrs = resp.read(), resp.status, resp.headers
        except urllib.error.HTTPError as err:
            raw, status, hdrs = err.read(), err.code, err.headers
        return status, (json.loads(raw) if raw else None), hdrs

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT)
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class HeldRequest:
    """A request whose last header line is withheld: the sync worker that accepted it waits
    for it, so every other request meanwhile is answered by the other worker."""

    def __init__(self, server, path, key):
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nx-api-key: {key}\r\n".encode())

    def finish(self):
        """Send the rest; returns (status, headers, JSON body or None) of the answer."""
        try:
            self.sock.sendall(b"Connection: close\r\n\r\n")
            reader = self.sock.makefile("rb")
            status = int(reader.readline().split()[1])
            headers = http.client.parse_headers(reader)
            raw = reader.read()
            return status, headers, json.loads(raw) if raw else None
        finally:
            self.sock.close()
