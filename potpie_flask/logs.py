"""Request ids and one JSON log line per request (SPEC section 10)."""
import datetime as dt
import json
import logging
import re
import sys
import time
import uuid

from flask import g, has_request_context, request

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# The secret part of an API key (SPEC section 2), in either case, with or without its sk-.
_KEY_MATERIAL = re.compile(r"(?:sk-)?[0-9a-fA-F]{64}")
_REQUEST_FIELDS = ("method", "path", "status", "duration_ms", "user_id")

log = logging.getLogger("potpie_flask")
access_log = logging.getLogger("potpie_flask.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, request_id, then the record's own fields."""

    def format(self, record):
        line = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "request_id": getattr(record, "request_id", None) or _current_request_id(),
        }
        if record.name == access_log.name:
            line.update({key: getattr(record, key, None) for key in _REQUEST_FIELDS})
        else:
            line["message"] = record.getMessage()
            if record.exc_info:
                line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def _current_request_id():
    return g.get("request_id") if has_request_context() else None


def request_id_from(header):
    """The client's X-Request-ID when it is a sane token, else a fresh one."""
    # An API key sent as (or inside) the request id would be echoed, logged and stored
    # (SPEC section 2).
    if header and _SANE_REQUEST_ID.fullmatch(header) and not _KEY_MATERIAL.search(header):
        return header
    return uuid.uuid4().hex


def init_app(app):
    """Attach the JSON handler and the per-request id and log line."""
    if not any(isinstance(h.formatter, JsonFormatter) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(app.config["LOG_LEVEL"])  # a number, or a name in upper case: config.check

    @app.before_request
    def start_request():
        g.request_id = request_id_from(request.headers.get("X-Request-ID"))
        g.started = time.perf_counter()

    @app.after_request
    def finish_request(response):
        response.headers["X-Request-ID"] = g.request_id
        access_log.info("request", extra={
            "request_id": g.request_id,
            "method": request.method,
            # A key pasted into a URL stays out of the log, as it does from every other field.
            "path": _KEY_MATERIAL.sub("[redacted]", request.path),
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - g.started) * 1000, 3),
            "user_id": g.get("user_id"),
        })
        return response
