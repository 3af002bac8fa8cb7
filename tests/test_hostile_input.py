"""Hostile input: a corpus of malformed requests against one real gunicorn server.

Every request gets the 4xx JSON answer its fault calls for (SPEC section 3), the same
master and workers serve all of them, and the server is healthy and saves normally after.
"""
import http.client
import io
import json
import random
import socket

import pytest

from potpie_flask.models import Integration

from .faults import SAVE, workers
from .servers import Gunicorn, server_env

pytestmark = pytest.mark.slow

UNFRAMED_TOKEN = "ghp_unframed" + "S3cr3t" * 6
VALID = {"name": "Hostile", "integration_type": "jira", "status": "active", "active": True,
         "unique_identifier": "hostile-1",
         "auth_data": {"access_token": "a", "refresh_token": "r", "code": "c", "token_type": "Bearer",
                       "expires_at": "2030-01-01T00:00:00Z", "scope": "s"},
         "scope_data": {"org_slug": "o", "installation_id": "i", "workspace_id": "w",
                        "project_id": "p"},
         "metadata": {"instance_name": "n", "created_via": "api", "version": "1",
                      "description": "d", "tags": ["t"]}}

# Every string field and its maximum length (SPEC section 6).
STRING_LIMITS = {
    ("name",): 255, ("unique_identifier",): 255,
    ("auth_data", "access_token"): 8192, ("auth_data", "refresh_token"): 8192,
    ("auth_data", "code"): 8192, ("auth_data", "token_type"): 64, ("auth_data", "scope"): 2048,
    ("scope_data", "org_slug"): 255, ("scope_data", "installation_id"): 255,
    ("scope_data", "workspace_id"): 255, ("scope_data", "project_id"): 255,
    ("metadata", "instance_name"): 255, ("metadata", "created_via"): 64,
    ("metadata", "version"): 64, ("metadata", "description"): 2000,
}
OTHER_FIELDS = {("integration_type",): str, ("status",): str, ("active",): bool,
                ("auth_data", "expires_at"): str, ("metadata", "tags"): list,
                ("auth_data",): dict, ("scope_data",): dict, ("metadata",): dict}
REQUIRED = {("name",), ("integration_type",), ("status",), ("active",)}
WRONG_VALUES = [0, -1, 1.5, True, "text", [], ["x"], {}, {"k": "v"}]


def with_value(path, value):
    body = json.loads(json.dumps(VALID))
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


def wrong_type(value, expected):
    if expected is str:
        return not isinstance(value, str)
    if expected is bool:
        return not isinstance(value, bool)
    return not isinstance(value, expected)


def encoded(body):
    return json.dumps(body).encode()


def corpus():
    """(label, method, path, headers, body bytes, status) of every hostile request.

    The status is what the request is refused with: 413 too large, 415 not JSON, 404 no
    such integration, 405 no such method, 422 for everything else (not UTF-8, not JSON, or
    JSON the schema refuses).
    """
    rng = random.Random(4)
    json_headers = {"Content-Type": "application/json"}
    yield from ((f"random bytes {n}", "POST", SAVE, json_headers,
                 bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000))), 422)
                for n in range(25))
    text = json.dumps(VALID)
    for cut in sorted(rng.sample(range(len(text)), 20)):
        yield f"truncated at {cut}", "POST", SAVE, json_headers, text[:cut].encode(), 422
    yield "empty body", "POST", SAVE, json_headers, b"", 422
    yield "deep list", "POST", SAVE, json_headers, b"[" * 10_000 + b"]" * 10_000, 422
    yield ("deep object", "POST", SAVE, json_headers,
           b'{"a":' * 10_000 + b"1" + b"}" * 10_000, 422)
    yield ("deep in a field", "POST", SAVE, json_headers,
           text[:-1].encode() + b', "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", 422)
    for literal in ("1" * 5000, "-" + "9" * 60000, "1e999", "-1e999", "1e-999", "NaN",
                    "Infinity", "-Infinity", "123456789012345678901234567890"):
        yield f"number {literal[:12]}", "POST", SAVE, json_headers, literal.encode(), 422
        for path in (("name",), ("active",), ("metadata", "tags"), ("auth_data", "expires_at")):
            body = encoded(with_value(path, "__N__")).replace(b'"__N__"', literal.encode())
            yield f"number {literal[:12]} in {path}", "POST", SAVE, json_headers, body, 422
    for path in STRING_LIMITS:
        yield (f"NUL in {path}", "POST", SAVE, json_headers,
               encoded(with_value(path, "a\u0000b")), 422)
        lone = encoded(with_value(path, "__S__")).replace(b"__S__", b"a\\ud800b")
        yield f"lone surrogate in {path}", "POST", SAVE, json_headers, lone, 422
        raw = encoded(with_value(path, "__S__")).replace(b"__S__", b"a\xed\xa0\x80b")
        yield f"encoded surrogate in {path}", "POST", SAVE, json_headers, raw, 422
    yield ("NUL in a tag", "POST", SAVE, json_headers,
           encoded(with_value(("metadata", "tags"), ["\u0000"])), 422)
    for path, limit in STRING_LIMITS.items():
        yield (f"overlong {path}", "POST", SAVE, json_headers,
               encoded(with_value(path, "x" * (limit + 1))), 422)
    yield ("overlong tag", "POST", SAVE, json_headers,
           encoded(with_value(("metadata", "tags"), ["t" * 65])), 422)
    yield ("too many tags", "POST", SAVE, json_headers,
           encoded(with_value(("metadata", "tags"), [f"t{n}" for n in range(51)])), 422)
    typed = {**dict.fromkeys(STRING_LIMITS, str), **OTHER_FIELDS}
    for path, expected in typed.items():
        values = [v for v in WRONG_VALUES if wrong_type(v, expected)]
        values += [None] if path in REQUIRED else []
        for value in values:
            yield (f"{type(value).__name__} in {path}", "POST", SAVE, json_headers,
                   encoded(with_value(path, value)), 422)
    for top in (None, [], "text", 1, True, [VALID]):
        yield f"top-level {top!r:.20}", "POST", SAVE, json_headers, encoded(top), 422
    yield ("repeated key", "POST", SAVE, json_headers,
           b'{"name": "a", "name": "b", "integration_type": "jira"}', 422)
    yield ("repeated nested key", "POST", SAVE, json_headers,
           b'{"name": "a", "integration_type": "jira", "auth_data": {"access_token": "x", '
           b'"access_token": "y"}}', 422)
    yield "64 KiB + 1", "POST", SAVE, json_headers, b" " * (64 * 1024 + 1), 413
    yield ("64 KiB + 1 of JSON", "POST", SAVE, json_headers,
           encoded(with_value(("metadata", "description"), "d" * (64 * 1024))), 413)
    for ctype in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                  "application/jsonx", "application/json-patch+json", "text/json", "*/*"):
        headers = {"Content-Type": ctype} if ctype else {}
        yield f"content type {ctype}", "POST", SAVE, headers, encoded(VALID), 415
        yield (f"content type {ctype} on PATCH", "PATCH", "/api/v2/integrations/x", headers,
               encoded(VALID), 415)
    for query in ("limit=abc", "limit=0", "limit=201", "limit=1e3", "limit=-1", "offset=-1",
                  "offset=abc", "limit=" + "9" * 40, "active=yes", "active=1", "active=",
                  "integration_type=SENTRY", "status=ok", "unknown=1", "limit=%00", "limit=%ff",
                  "org_slug=" + "o" * 300, "limit=1.5", "offset=NaN", "limit=%EF%BC%91"):
        yield f"query {query[:20]}", "GET", "/api/v2/integrations?" + query, {}, None, 422
    yield "audit query", "GET", "/api/v2/integrations/x/audit?limit=0", {}, None, 422
    for body in (b"{}", b"[]", b'{"integration_type": "jira"}', b'{"unique_identifier": "u"}',
                 b"\xff\xfe"):
        yield f"PATCH {body!r}", "PATCH", "/api/v2/integrations/x", json_headers, body, 422
        yield f"PUT {body!r}", "PUT", "/api/v2/integrations/x", json_headers, body, 422
    yield "long id", "GET", "/api/v2/integrations/" + "a" * 1000, {}, None, 404
    yield "bad escape in id", "GET", "/api/v2/integrations/%ff%00", {}, None, 404
    yield "wrong method", "DELETE", SAVE, {}, None, 405


def send(server, key, method, path, headers, body):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("x-api-key", key)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def send_chunked(server, key, body):
    """A body without Content-Length: the size limit must hold for chunked bodies too."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", SAVE, body=iter([body[i:i + 8192] for i in range(0, len(body), 8192)]),
                     headers={"Content-Type": "application/json", "x-api-key": key},
                     encode_chunked=True)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def send_unframed_chunked(server, key, body):
    """A chunked body sent without its chunk framing: gunicorn reads it as the chunk size."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST " + SAVE.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nx-api-key: " + key.encode() +
                     b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
                     body + b"\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, raw = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    ctype = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-type:"))
    return status, ctype, raw


# What SPEC sections 3 and 4 give each refusal of the corpus (a 422's problems vary).
REFUSALS = {
    404: {"success": False, "data": None, "error": "Integration not found"},
    405: {"detail": "Method Not Allowed"},
    413: {"detail": "Request body too large"},
    415: {"detail": "Content-Type must be application/json"},
}


def refused_as_documented(status, answer):
    if status == 422:
        return (list(answer) == ["detail"] and len(answer["detail"]) >= 1
                and all(list(problem)[:3] == ["loc", "msg", "type"] and problem["loc"]
                        and problem["msg"] for problem in answer["detail"]))
    return answer == REFUSALS.get(status)


def test_corpus_gets_only_4xx_json_from_the_same_healthy_server(
        api_key, instance_path, db_settings, tmp_path):
    log_path = tmp_path / "gunicorn.log"
    with Gunicorn(server_env(instance_path, db_settings), workers=2, log_path=log_path) as server:
        pids = workers(server, 2)
        wrong = []
        count = 0
        for label, method, path, headers, body, expected in corpus():
            status, ctype, raw = send(server, api_key, method, path, headers, body)
            count += 1
            # Each is refused for what it is; a bare 400 would mean the request was not
            # understood at all.
            if not (status == expected and ctype == "application/json; charset=utf-8"
                    and refused_as_documented(status, json.loads(raw))):
                wrong.append((label, expected, status, ctype, raw[:200]))
        status, ctype, raw = send_chunked(server, api_key, b" " * (64 * 1024 + 1))
        if not (status == 413 and ctype == "application/json; charset=utf-8"
                and json.loads(raw) == REFUSALS[413]):
            wrong.append(("chunked 64 KiB + 1", status, ctype, raw[:200]))
        unframed = json.dumps({**VALID, "auth_data": {"access_token": UNFRAMED_TOKEN}}).encode()
        status, ctype, raw = send_unframed_chunked(server, api_key, unframed)
        if not (status, ctype, json.loads(raw)) == (400, "application/json; charset=utf-8",
                                                    {"detail": "Bad Request"}):
            wrong.append(("chunked without framing", status, ctype, raw[:200]))
        assert not wrong, f"{len(wrong)} of {count}: {wrong[:10]}"
        assert count > 300

        assert server.proc.poll() is None and workers(server, 2) == pids
        # Refused, each of them: nothing was stored.
        status, answer, _ = server.request("GET", "/api/v2/integrations", key=api_key)
        assert (status, answer["pagination"]["total"]) == (200, 0)
        assert server.request("GET", "/healthz")[:2] == (200, {"status": "ok"})
        assert server.request("GET", "/readyz")[:2] == (200, {"status": "ready"})
        status, answer, _ = server.request("POST", SAVE, body=VALID, key=api_key)
        assert status == 200, answer
    log = log_path.read_text()
    assert "Traceback" not in log and UNFRAMED_TOKEN not in log


def test_repeated_key_is_a_422_at_the_body(api):
    r = api.post(SAVE, data=b'{"name": "a", "name": "b", "integration_type": "jira"}',
                 content_type="application/json")
    assert r.status_code == 422
    [problem] = r.get_json()["detail"]
    assert problem["type"] == "value_error.jsondecode" and problem["loc"] == ["body", 0]
    assert "duplicate key 'name'" in problem["msg"]


@pytest.mark.parametrize("integration_id", ["a\u0000b", "550E8400-E29B-41D4-A716-446655440000",
                                            "x" * 300])
def test_an_id_that_is_not_a_uuid_or_not_stored_is_not_found(api, integration_id):
    for method in ("get", "delete"):
        r = getattr(api, method)("/api/v2/integrations/" + integration_id)
        assert (r.status_code, r.get_json()["error"]) == (404, "Integration not found")
    assert api.get(f"/api/v2/integrations/{integration_id}/audit").status_code == 404


def test_an_id_in_upper_case_names_the_same_integration(api):
    saved = api.save(VALID).get_json()["data"]
    path = "/api/v2/integrations/" + saved["integration_id"].upper()
    assert api.get(path).get_json()["data"] == saved
    changed = api.patch(path, json={"status": "inactive"}).get_json()["data"]
    assert (changed["integration_id"], changed["status"]) == (saved["integration_id"], "inactive")
    assert [e["action"] for e in api.get(path + "/audit").get_json()["data"]] == [
        "update", "create"]
    assert api.get(path + "/template").status_code == 200
    assert api.delete(path).status_code == 204
    assert api.get("/api/v2/integrations/" + saved["integration_id"]).status_code == 404


def test_a_body_shorter_than_its_content_length_is_a_400_and_saves_nothing(app, api_key):
    # A client gone mid-body gets werkzeug's ClientDisconnected: not a response of the
    # contract (nobody is left to read it), so the plain test client, not the checked one.
    body = json.dumps(VALID).encode()
    r = app.test_client().post(SAVE, data=body, content_type="application/json",
                               headers={"x-api-key": api_key},
                               environ_overrides={"CONTENT_LENGTH": str(len(body) + 10)})
    assert (r.status_code, r.content_type, r.get_json()) == (
        400, "application/json; charset=utf-8", {"detail": "Bad Request"})
    with app.app_context():
        assert Integration.select().count() == 0


class Trickle(io.RawIOBase):
    """An input stream that hands over at most 7 bytes a read, as a server may."""

    def __init__(self, data):
        self.data, self.at = data, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=io.SEEK_SET):
        self.at = offset if whence == io.SEEK_SET else len(self.data) + offset
        return self.at

    def tell(self):
        return self.at

    def read(self, size=-1):
        size = 7 if size < 0 else min(size, 7)
        chunk = self.data[self.at:self.at + size]
        self.at += len(chunk)
        return chunk


def test_a_body_handed_over_a_few_bytes_a_read_is_read_whole(api, app):
    body = json.dumps(VALID).encode()
    r = api.post(SAVE, input_stream=Trickle(body), content_length=len(body),
                 content_type="application/json")
    assert r.status_code == 200
    assert r.get_json()["data"]["name"] == VALID["name"]
    with app.app_context():
        assert Integration.select().count() == 1
