"""Helpers of the fault-injection tests: processes, deadlines and bounded save loads."""
import http.client
import json
import os
import threading
import time
from urllib.parse import urlsplit

SAVE = "/api/v2/integrations/save"


def wait_until(predicate, timeout, what):
    """Poll `predicate` until it is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def children(pid):
    """Process ids whose parent is `pid` (gunicorn's workers), read from /proc."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name may hold spaces: fields after its closing parenthesis.
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(entry))
    return found


def workers(server, count):
    """The worker pids of a gunicorn server, once it has `count` of them."""
    return wait_until(lambda: (lambda p: p if len(p) == count else None)(children(server.proc.pid)),
                      30, f"{count} gunicorn workers")


def pg_address(url):
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def post_json(base_url, path, body, key, timeout=30):
    """One POST on a fresh connection; (status, parsed body or None, headers) or the exception."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body),
                     headers={"Content-Type": "application/json", "x-api-key": key})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else None), dict(resp.getheaders())
    finally:
        conn.close()


class SaveLoad:
    """Threads that each save distinct integrations until stopped, bounded in count and time.

    `acknowledged` maps unique_identifier -> (body, integration_id) for every save
    answered 2xx; `unanswered` holds the bodies whose answer never came.
    """

    def __init__(self, base_url, key, threads=4, per_thread=200, max_seconds=60, tag="load"):
        self.base_url, self.key, self.tag = base_url, key, tag
        self.per_thread, self.deadline = per_thread, time.monotonic() + max_seconds
        self.acknowledged, self.unanswered, self.failed = {}, {}, []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(threads)]

    def body(self, thread, n):
        ident = f"{self.tag}-{thread}-{n}"
        return {"name": f"Crash {ident}", "integration_type": "sentry", "unique_identifier": ident,
                "status": ("active", "pending", "error")[n % 3],
                "auth_data": {"access_token": f"tok-{ident}-{os.urandom(6).hex()}",
                              "refresh_token": f"ref-{ident}", "scope": "read write"},
                "scope_data": {"org_slug": f"org-{thread}"},
                "metadata": {"description": f"saved by thread {thread}", "tags": [ident]}}

    @property
    def answered(self):
        with self._lock:
            return len(self.acknowledged)

    def start(self):
        for thread in self._threads:
            thread.start()
        return self

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
            assert not thread.is_alive(), "a load thread did not stop"

    def _run(self, thread):
        for n in range(self.per_thread):
            if self._stop.is_set() or time.monotonic() > self.deadline:
                return
            body = self.body(thread, n)
            try:
                status, answer, _ = post_json(self.base_url, SAVE, body, self.key, timeout=20)
            except (OSError, http.client.HTTPException):
                with self._lock:
                    self.unanswered[body["unique_identifier"]] = body
                time.sleep(0.01)  # the server is down or restarting a worker
                continue
            with self._lock:
                if 200 <= status < 300:
                    self.acknowledged[body["unique_identifier"]] = (
                        body, answer["data"]["integration_id"])
                else:
                    self.failed.append((status, answer))
