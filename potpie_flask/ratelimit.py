"""Rate limits (SPEC section 11): per API key, and on failed authentication per client address.

Flask-Limiter counts, in the storage of RATELIMIT_STORAGE_URI (memory:// per worker, redis://
shared by every worker and instance). Only the `api` blueprint is limited: /healthz, /readyz
and any other blueprint (the OpenAPI document and the docs page) never are.

Two limits guard every `api` route, both checked in the limiter's app-level before_request
hook, which Flask runs before the blueprint's `require_api_key`:

- `auth-failures` (RATELIMIT_AUTH_FAILURES), keyed by the client address: tested before the
  request and deducted only when the answer is 401, so once a client has used up its failures
  it gets 429 before any key lookup, while answers other than 401 never count.
- `api-key` (RATELIMIT_DEFAULT), keyed by a hash of the x-api-key header, one budget across
  every route of the blueprint. Requests without a key are left to the first limit.

Every limited answer carries RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset (seconds
until the window resets); a 429 also carries Retry-After. When the storage is unreachable the
limiter falls back to this worker's memory (fail open) and says so once a minute in the log.
"""
import hashlib
import logging
import math
import time

from flask import request
from flask_limiter import Limiter
from limits import parse_many
from redis.backoff import NoBackoff
from redis.retry import Retry

from .auth import sent_key
from .config import ConfigError

log = logging.getLogger("potpie_flask")

BLUEPRINT = "api"
KEY_SCOPE = "api-key"
AUTH_FAILURE_SCOPE = "auth-failures"
HEADER_LIMIT = "RateLimit-Limit"
HEADER_REMAINING = "RateLimit-Remaining"
HEADER_RESET = "RateLimit-Reset"
# Seconds between two log lines about the same storage problem, per worker.
LOG_INTERVAL = 60


def client_address():
    """The address failures count against. Behind a proxy, see README "Rate limits"."""
    return request.remote_addr or "unknown"


def key_digest():
    """A hash of the sent key: neither the key nor its stored hash ever reaches the storage."""
    return hashlib.sha256(b"potpie-ratelimit\0" + sent_key().encode()).hexdigest()


def _without_key():
    return not sent_key()


def _outside_limited_blueprint():
    return request.blueprint != BLUEPRINT


def _is_401(response):
    return response.status_code == 401


_REDIS_SCHEMES = ("redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")


def _scheme(uri):
    """The storage URI's scheme in lower case (RFC 3986, as limits reads it); None if no URI."""
    return uri.split("://", 1)[0].lower() if isinstance(uri, str) and "://" in uri else None


def _check_storage(uri):
    """ConfigError unless the URI names memory or a Redis server: the storages installed.

    Only its scheme is named in the error: a Redis URI may hold a password.
    """
    scheme = _scheme(uri)
    if scheme != "memory" and scheme not in _REDIS_SCHEMES:
        raise ConfigError(
            "POTPIE_RATELIMIT_STORAGE_URI must be memory:// or a Redis server's URI ("
            + ", ".join(f"{name}://" for name in _REDIS_SCHEMES) + "), "
            + (f"not a {scheme}:// URI" if scheme else "not a URI"))


def storage_options(uri, timeout):
    """Redis answers within `timeout` seconds or counts as down: no retries, no backoff."""
    if _scheme(uri) not in _REDIS_SCHEMES:
        return {}
    return {"socket_connect_timeout": timeout, "socket_timeout": timeout,
            "retry": Retry(NoBackoff(), 0)}


class _Throttle:
    """Let a message through at most once per interval (per worker)."""

    clock = staticmethod(time.monotonic)

    def __init__(self, interval):
        self.interval, self.last = interval, {}

    def allow(self, topic):
        now = self.clock()
        if topic in self.last and now - self.last[topic] < self.interval:
            return False
        self.last[topic] = now
        return True


class _ForwardErrors(logging.Handler):
    """Flask-Limiter's own errors (swallowed storage failures), throttled, into our log."""

    def __init__(self, throttle):
        super().__init__(logging.ERROR)
        self.throttle = throttle

    def emit(self, record):
        if self.throttle.allow(record.msg):
            cause = type(record.exc_info[1]).__name__ if record.exc_info else None
            log.error("rate limiter: %s (%s)", record.msg, cause)


def init_app(app):
    """Attach the limiter to `app` unless RATELIMIT_ENABLED is false."""
    config = app.config
    config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    if not config["RATELIMIT_ENABLED"]:
        return None
    _check_storage(config["RATELIMIT_STORAGE_URI"])
    for name in ("RATELIMIT_AUTH_FAILURES", "RATELIMIT_DEFAULT"):
        _check_limit(name, config[name])
    throttle = _Throttle(LOG_INTERVAL)
    _route_library_log(throttle)
    limiter = Limiter(
        client_address,
        storage_options=storage_options(config["RATELIMIT_STORAGE_URI"],
                                         config["RATELIMIT_STORAGE_TIMEOUT"]),
        strategy="fixed-window",
    )
    limiter.request_filter(_outside_limited_blueprint)
    # Registered before limiter.init_app, so Flask runs it after the limiter's own
    # after_request, which deducts the 401 from the failure budget first.
    app.after_request(_Headers(limiter, throttle))
    limiter.init_app(app)
    # Order matters only as a tie-break: the failure budget is tested first.
    limiter.shared_limit(config["RATELIMIT_AUTH_FAILURES"], AUTH_FAILURE_SCOPE,
                         key_func=client_address, deduct_when=_is_401)(_blueprint())
    limiter.shared_limit(config["RATELIMIT_DEFAULT"], KEY_SCOPE,
                         key_func=key_digest, exempt_when=_without_key)(_blueprint())
    app.extensions["potpie_limiter"] = limiter
    return limiter


def _check_limit(name, value):
    """ConfigError unless `value` parses: Flask-Limiter would log the error and not limit."""
    try:
        parse_many(value)
    except ValueError as exc:
        raise ConfigError(f"POTPIE_{name}: {exc} in {value!r} (e.g. '600 per minute')") from None


def _blueprint():
    from .api import bp
    return bp


def _route_library_log(throttle):
    library_log = logging.getLogger("flask-limiter")
    library_log.propagate = False
    if not any(isinstance(h, _ForwardErrors) for h in library_log.handlers):
        library_log.addHandler(_ForwardErrors(throttle))


class _Headers:
    """after_request: the RateLimit-* headers of the limit that matters to this answer."""

    def __init__(self, limiter, throttle):
        self.limiter, self.throttle = limiter, throttle
        self.storage_down = False

    def __call__(self, response):
        evaluated = self.limiter.current_limits
        if not evaluated:
            return response
        self._watch_storage()
        shown = _shown_limit(evaluated, response.status_code)
        try:
            reset_at, remaining = shown.window
        except Exception as exc:  # storage failed mid-request: answer without the headers
            if self.throttle.allow("headers"):
                log.warning("rate limit headers skipped: %s", type(exc).__name__)
            return response
        reset_in = max(0, math.ceil(reset_at - time.time()))
        response.headers[HEADER_LIMIT] = str(shown.limit.amount)
        response.headers[HEADER_REMAINING] = str(remaining)
        response.headers[HEADER_RESET] = str(reset_in)
        if response.status_code == 429:
            response.headers["Retry-After"] = str(max(1, reset_in))
        return response

    def _watch_storage(self):
        """Log an unreachable storage once a minute while it lasts, and its recovery once."""
        down = self.limiter.limiter.storage is not self.limiter.storage
        if down and self.throttle.allow("storage"):
            log.warning("rate limit storage unreachable: serving with this worker's "
                        "in-memory counters until it answers again")
        elif not down and self.storage_down:
            self.throttle.last.pop("storage", None)
            log.warning("rate limit storage reachable again")
        self.storage_down = down


def _shown_limit(evaluated, status):
    """The breached limit; else the failure budget for a 401; else the key's own budget."""
    for candidate in evaluated:
        if candidate.breached:
            return candidate
    wanted = AUTH_FAILURE_SCOPE if status == 401 else KEY_SCOPE
    for candidate in evaluated:
        if candidate.request_args[-1] == wanted:
            return candidate
    return evaluated[0]
