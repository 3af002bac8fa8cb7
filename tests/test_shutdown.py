"""Graceful shutdown: SIGTERM with requests in flight (gunicorn's graceful_timeout).

Each of the server's workers holds a save whose body is still arriving when the
master receives SIGTERM; every one of them must still be answered 200, with no
connection reset and no 5xx, and be stored.
"""
import json
import os
import signal
import socket

import pytest

from potpie_flask.models import Integration

from .faults import SAVE, wait_until, workers
from .servers import STOP_TIMEOUT, Gunicorn, server_env

pytestmark = pytest.mark.slow
WORKERS = 2


def _socket_inodes(pid):
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def accepted_connections(port, pids):
    """Established connections on `port` that one of `pids` has accepted (from /proc)."""
    inodes = set().union(*(_socket_inodes(pid) for pid in pids))
    count = 0
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            if local_port == port and fields[3] == "01" and int(fields[9]) in inodes:
                count += 1
    return count


def read_response(sock):
    """(status, JSON body) of an HTTP/1.1 response; raises on a reset connection."""
    raw = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        raw += chunk
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if sep:
            length = [int(h.split(b":")[1]) for h in head.split(b"\r\n")
                      if h.lower().startswith(b"content-length:")]
            if length and len(rest) >= length[0]:
                break
    head, _, rest = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(rest)


def test_sigterm_lets_in_flight_requests_finish(app, api_key, instance_path, db_settings, tmp_path):
    log_path = tmp_path / "gunicorn.log"
    server = Gunicorn(server_env(instance_path, db_settings), workers=WORKERS, log_path=log_path)
    clients = []
    try:
        pids = workers(server, WORKERS)
        for n in range(WORKERS):
            body = json.dumps({"name": f"In flight {n}", "integration_type": "slack",
                               "unique_identifier": f"in-flight-{n}",
                               "auth_data": {"access_token": f"xoxb-{n}"}}).encode()
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"x-api-key: %s\r\nContent-Length: %d\r\n\r\n"
                         % (SAVE.encode(), api_key.encode(), len(body)) + body[:10])
            clients.append((sock, body[10:]))
            wait_until(lambda: accepted_connections(server.port, pids) == n + 1, 10,
                       f"a worker to accept request {n}")

        os.kill(server.proc.pid, signal.SIGTERM)
        wait_until(lambda: b"Handling signal: term" in log_path.read_bytes(), 10,
                   "gunicorn to start its graceful shutdown")
        answers = []
        for sock, rest in clients:
            sock.sendall(rest)
            answers.append(read_response(sock))
        assert [status for status, _ in answers] == [200] * WORKERS
        assert all(answer["success"] for _, answer in answers)
        assert server.proc.wait(STOP_TIMEOUT) == 0
    finally:
        for sock, _ in clients:
            sock.close()
        server.stop()
    with app.app_context():
        assert Integration.select().count() == WORKERS
