"""Every error shape of the API: 422 problem lists, {"detail"} answers and failure envelopes."""
import logging

import peewee
from flask import current_app, jsonify, request
from flask_limiter import RateLimitExceeded
from werkzeug.exceptions import HTTPException

from . import db
from .fields import EXTRA, MISSING, NOT_A_DICT, NOT_A_LIST, NOT_NULL
from .integrations import IntegrationNotFound, NameTaken, TypeChangeRefused
from .postgresql import refused_writes

log = logging.getLogger("potpie_flask")

# pydantic-v1 types of the messages marshmallow produces itself (fields.py renames them).
_PLAIN_TYPES = {
    MISSING: "value_error.missing",
    NOT_NULL: "type_error.none.not_allowed",
    NOT_A_DICT: "type_error.dict",
    NOT_A_LIST: "type_error.list",
    EXTRA: "value_error.extra",
}

# Outcomes of the domain operations: (status, reason after the verb prefix or None for none).
_OUTCOMES = {
    IntegrationNotFound: (404, None),
    NameTaken: (409, "Integration with this name already exists"),
    TypeChangeRefused: (409, "integration_type of an existing integration cannot be changed"),
}


class RequestInvalid(Exception):
    """The request failed validation; `problems` is the SPEC section 3 list."""

    def __init__(self, problems):
        super().__init__("request failed validation")
        self.problems = problems


class DetailError(Exception):
    """An answer of the form {"detail": "<sentence>"} (415 and friends)."""

    def __init__(self, status, detail, headers=None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def problems_from(messages, location):
    """Flatten marshmallow's nested error messages into SPEC section 3 entries."""
    found = []
    _collect(messages, [location], found)
    return found


def _collect(messages, loc, found, schema_level=False):
    if isinstance(messages, dict):
        for key, value in messages.items():
            schema = key == "_schema"
            _collect(value, loc if schema else loc + [key], found, schema_level=schema)
        return
    for msg in messages:
        # marshmallow files an unknown field named "_schema" with the schema-level errors.
        at = loc + ["_schema"] if schema_level and msg == EXTRA else loc
        entry = {"loc": at, "msg": str(msg),
                 "type": getattr(msg, "type", None) or _PLAIN_TYPES.get(msg, "value_error")}
        ctx = getattr(msg, "ctx", None)
        if ctx:
            entry["ctx"] = ctx
        found.append(entry)


def envelope_failure(message, status, headers=None):
    """The original service's failure envelope, with a truthful status."""
    response = jsonify(success=False, data=None, error=message)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def detail(message, status, headers=None):
    response = jsonify(detail=message)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _verb():
    """The verb of the failing route's messages (`save`, `update`...), None off the API."""
    view = current_app.view_functions.get(request.endpoint)
    return getattr(view, "verb", None)


def _failure(reason, status, headers=None):
    verb = _verb()
    if verb is None:
        return detail(reason, status, headers)
    return envelope_failure(f"Failed to {verb} integration: {reason}", status, headers)


def init_app(app):
    """Register the handlers that turn every failure into JSON."""

    @app.errorhandler(RequestInvalid)
    def invalid(exc):
        return jsonify(detail=exc.problems), 422

    @app.errorhandler(DetailError)
    def plain(exc):
        return detail(exc.detail, exc.status, exc.headers)

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc):
        # A whole window is the safe answer; ratelimit.py narrows it to the real reset.
        return detail("Rate limit exceeded", 429,
                      {"Retry-After": str(exc.limit.limit.get_expiry())})

    @app.errorhandler(HTTPException)
    def http_error(exc):
        headers = {k: v for k, v in exc.get_headers() if k.lower() not in ("content-type",)}
        return detail(_HTTP_DETAILS.get(exc.code, exc.name), exc.code, headers)

    for error_class, (status, reason) in _OUTCOMES.items():
        app.register_error_handler(error_class, _outcome_handler(status, reason))

    for error_class in db.UNAVAILABLE_ERRORS:
        app.register_error_handler(error_class, _unavailable)

    @app.errorhandler(peewee.InternalError)
    def internal(exc):
        # A server that takes no writes (a standby the pool still reaches after a failover)
        # is unavailable for a while, not broken: the client should retry.
        return _unavailable(exc) if refused_writes(exc) else unexpected(exc)

    @app.errorhandler(Exception)
    def unexpected(exc):
        log.exception("unexpected error")
        return _failure("Internal server error", 500)


def _unavailable(exc):
    log.warning("database unavailable: %s", type(exc).__name__)
    retry = {"Retry-After": str(current_app.config["RETRY_AFTER_SECONDS"])}
    return _failure("Database unavailable", 503, retry)


def _outcome_handler(status, reason):
    def handle(exc):
        if reason is None:
            return envelope_failure("Integration not found", status)
        return _failure(reason, status)
    return handle


_HTTP_DETAILS = {
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request body too large",
}
