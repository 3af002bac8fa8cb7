"""Reading request bodies and query strings into validated data, or RequestInvalid."""
import json
import logging

from flask import current_app, request
from marshmallow import ValidationError
from werkzeug.exceptions import (BadRequest, ClientDisconnected, HTTPException,
                                 RequestEntityTooLarge)

from .errors import DetailError, RequestInvalid, problems_from
from .schemas import NO_QUERY, load_body

log = logging.getLogger("potpie_flask")


def _decode_problem(msg, pos, lineno=None, colno=None):
    ctx = {"msg": msg, "pos": pos}
    if lineno is not None:
        ctx.update(lineno=lineno, colno=colno)
    return RequestInvalid([{"loc": ["body", pos], "msg": msg,
                            "type": "value_error.jsondecode", "ctx": ctx}])


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs):
    # Parsers disagree on which of two equal keys wins (first, last, error), so a body that
    # repeats one could mean one thing to a proxy in front and another here: refuse it.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


# Built once: json.loads builds a new decoder on every call that passes hooks (3 us of 6).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_keys)


def _raw_body():
    """The body bytes, 413 beyond MAX_CONTENT_LENGTH whether or not a Content-Length was sent."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    length = request.content_length
    if length is not None and limit and length <= limit:
        # What werkzeug's get_data does for a declared length, without the LimitedStream
        # wrapped around the input (about 30 us: more than parsing a save's JSON).
        stream = request.environ["wsgi.input"]
        raw = _read(stream.read, length)
        while len(raw) < length:
            # A server may hand over less at a time.
            more = _read(stream.read, length - len(raw))
            if not more:
                raise ClientDisconnected()
            raw += more
        return raw
    if length is None and limit and request.environ.get("wsgi.input_terminated"):
        # A chunked body: werkzeug would stop at the limit and hand over the first
        # MAX_CONTENT_LENGTH bytes as if they were all; read one more to tell.
        raw = _read(request.environ["wsgi.input"].read, limit + 1)
        if len(raw) > limit:
            raise RequestEntityTooLarge()
        return raw
    return _read(lambda: request.get_data(cache=False))


def _read(read, *size):
    """read(*size) from the server's input; a body it cannot deframe is the client's 400."""
    try:
        return read(*size)
    except (HTTPException, MemoryError):
        raise
    except Exception as exc:
        # gunicorn's InvalidChunkSize, say: its message quotes the body, credentials
        # included, so only its type is logged.
        log.warning("request body unreadable: %s", type(exc).__name__)
        raise BadRequest() from None


def json_body():
    """The request's JSON document; 415 unless it is application/json, 422 unless it parses."""
    # A charset parameter is ignored: RFC 8259 defines none for JSON, which is UTF-8.
    if request.mimetype != "application/json":
        raise DetailError(415, "Content-Type must be application/json")
    codings = request.headers.get("Content-Encoding", "").lower().split(",")
    if any(coding.strip() not in ("", "identity") for coding in codings):
        # Compressed bodies are not decoded here (RFC 9110: 415, naming what is accepted).
        raise DetailError(415, "Content-Encoding must be identity",
                          {"Accept-Encoding": "identity"})
    raw = _raw_body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A character offset, as every other position in a 422: what precedes the bad byte
        # decodes.
        raise _decode_problem("body is not valid UTF-8",
                              len(raw[:exc.start].decode("utf-8"))) from None
    if text.startswith("\ufeff"):
        # What json.loads answers; the decoder alone would only say "Expecting value".
        raise _decode_problem("Unexpected UTF-8 BOM (decode using utf-8-sig)", 0)
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise _decode_problem(exc.msg, exc.pos, exc.lineno, exc.colno) from None
    except RecursionError:
        raise _decode_problem("JSON nested too deeply", 0) from None
    except ValueError as exc:
        # NaN/Infinity literals, integers longer than Python converts, repeated keys.
        raise _decode_problem(str(exc).split(";")[0], 0) from None


def validated_body(schema):
    """The body loaded through `schema`, keys given as null dropped; no query parameter.

    A route with a body reads no query string: a parameter is refused in the same 422 as
    the body's problems (SPEC section 3: every problem found).
    """
    problems = _query_problems(NO_QUERY)[1]
    try:
        data = json_body()
    except RequestInvalid as exc:
        # A body that does not decode has no field to check, but the query string still has.
        raise RequestInvalid(problems + exc.problems) from None
    try:
        fields = load_body(schema, data)
    except ValidationError as exc:
        problems += problems_from(exc.messages, "body")
    if problems:
        raise RequestInvalid(problems)
    return fields


def validated_query(schema=NO_QUERY):
    """The query string loaded through `schema` (first value of a repeated parameter).

    By default none is read: any parameter is unknown. A client that sends `?dry_run=true`
    or `?soft=true` learns that no such thing exists before anything is written or deleted.
    """
    query, problems = _query_problems(schema)
    if problems:
        raise RequestInvalid(problems)
    return query


def _query_problems(schema):
    if schema is NO_QUERY and not request.query_string:
        # Nearly every request: not even an empty MultiDict to build.
        return {}, []
    try:
        return schema.load(request.args.to_dict(flat=True)), []
    except ValidationError as exc:
        return None, problems_from(exc.messages, "query")
