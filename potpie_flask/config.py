"""Package defaults; instance/config.py, then POTPIE_* environment variables override them."""
import re
from urllib.parse import urlsplit

from .db import is_postgresql


class ConfigError(ValueError):
    """A setting the service cannot work with, refused at start rather than at a request."""


def whole_number(config, name, least, most=None):
    """Make `config[name]` an int in [least, most] (ASCII digits in text too), or ConfigError."""
    value = config.get(name)
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        value = int(value)
    if (isinstance(value, bool) or not isinstance(value, int) or value < least
            or (most is not None and value > most)):
        bounds = f"of at least {least}" if most is None else f"from {least} to {most}"
        raise ConfigError(f"POTPIE_{name} must be a whole number {bounds}, not {value!r}")
    config[name] = value


def seconds(config, name):
    """Make `config[name]` a float of seconds above 0 (ASCII digits in text too), or ConfigError."""
    value = config.get(name)
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+(\.[0-9]+)?\s*", value):
        value = float(value)
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e9):
        raise ConfigError(f"POTPIE_{name} must be a number of seconds above 0 and below "
                          f"1,000,000,000, not {value!r}")
    config[name] = float(value)


def one_of(config, name, choices):
    """Make `config[name]` one of `choices` (upper case; given in any case), or ConfigError."""
    value = config.get(name)
    if not isinstance(value, str) or value.strip().upper() not in choices:
        raise ConfigError(f"POTPIE_{name} must be one of {', '.join(choices)}, not {value!r}")
    config[name] = value.strip().upper()


# Names of this module in capitals are settings (Flask's from_object loads every one, a
# leading underscore or not): its own constants are in lower case.
_on = ("true", "1", "on", "yes")
_off = ("false", "0", "off", "no")


def switch(config, name):
    """Make `config[name]` a bool: true/false, 1/0, on/off, yes/no in any case, or ConfigError.

    Any other word was read as "on": a mistyped `flase` left prepared statements on behind
    PgBouncer, where every request then failed. An empty value (`POTPIE_X=`, a compose
    file's unset variable) is refused too, rather than read as either.
    """
    value = config.get(name)
    if isinstance(value, str) and value.strip().lower() in _on + _off:
        value = value.strip().lower() in _on
    elif not isinstance(value, bool) and value in (0, 1):  # POTPIE_X=1 arrives as JSON's 1
        value = bool(value)
    if not isinstance(value, bool):
        raise ConfigError(f"POTPIE_{name} must be one of {', '.join(_on)} or "
                          f"{', '.join(_off)}, not {value!r}")
    config[name] = value


def database_url(config):
    """Refuse a DATABASE_URL naming neither a SQLite file nor PostgreSQL; its text is never echoed.

    It may hold a password, so the error names only what is wrong. SQLite in memory is
    refused: every worker, and every thread, would get an empty database of its own.
    """
    url = config.get("DATABASE_URL")
    if not isinstance(url, str):
        known = False
    elif urlsplit(url).scheme == "sqlite":
        # The scheme in any case, as urlsplit and db_url read it.
        file = url.split("?", 1)[0][len("sqlite:///"):]
        known = url[:len("sqlite:///")].lower() == "sqlite:///" and file not in ("", ":memory:")
    else:
        # Every spelling open_database takes for PostgreSQL, with its authority's "//".
        known = is_postgresql(url) and "://" in url
    if not known:
        raise ConfigError("DATABASE_URL must be sqlite:///<file> or "
                          "postgresql://<server>/<database>")


# The rate limiter's settings the service documents (README, "Rate limits"). Flask-Limiter
# reads many more RATELIMIT_* keys, and POTPIE_* variables reach all of them.
_rate_limit_settings = ("RATELIMIT_ENABLED", "RATELIMIT_DEFAULT", "RATELIMIT_AUTH_FAILURES",
                       "RATELIMIT_STORAGE_URI", "RATELIMIT_KEY_PREFIX",
                       "RATELIMIT_STORAGE_TIMEOUT")


def rate_limit_names(config):
    """ConfigError for a RATELIMIT_* setting other than the documented ones.

    Read by Flask-Limiter, POTPIE_RATELIMIT_HEADERS_ENABLED=true sent X-RateLimit-* headers
    with a timestamp for a reset, against what README documents, and a misspelt setting
    (POTPIE_RATELIMIT_ENABLE=false) did nothing at all.
    """
    for name in sorted(config):
        if name.startswith("RATELIMIT_") and name not in _rate_limit_settings:
            raise ConfigError(f"POTPIE_{name} is no setting of this service; its rate limits "
                              f"read {', '.join('POTPIE_' + n for n in _rate_limit_settings)}")


def check(config):
    """Refuse at start a setting the service cannot use, naming it, rather than fail requests."""
    database_url(config)
    rate_limit_names(config)
    if config.get("MAX_CONTENT_LENGTH") is not None:  # None: Flask's "no limit"
        whole_number(config, "MAX_CONTENT_LENGTH", 1)
    whole_number(config, "RETRY_AFTER_SECONDS", 0)
    whole_number(config, "DATABASE_LOCK_TIMEOUT_MS", 0, 2**31 - 1)  # PostgreSQL's own limit
    whole_number(config, "SQLITE_BUSY_TIMEOUT_MS", 0, 2**31 - 1)  # SQLite's (a C int)
    # SQLite reads any other word as NORMAL: a mistyped FULL would lose its durability quietly.
    one_of(config, "SQLITE_SYNCHRONOUS", ("NORMAL", "FULL", "EXTRA", "OFF"))
    # 0 is playhouse.pool's "no cap" and "never recycle".
    whole_number(config, "DATABASE_MAX_CONNECTIONS", 0)
    whole_number(config, "DATABASE_STALE_TIMEOUT", 0)
    # Above 0: playhouse.pool and libpq read 0 as "wait forever", never a 503.
    seconds(config, "DATABASE_POOL_TIMEOUT")
    whole_number(config, "DATABASE_CONNECT_TIMEOUT", 1)
    seconds(config, "RATELIMIT_STORAGE_TIMEOUT")
    switch(config, "DATABASE_PREPARED_STATEMENTS")
    switch(config, "RATELIMIT_ENABLED")
    # A number is a level too; logging's own error for another word names no variable.
    if type(config.get("LOG_LEVEL")) is not int:
        one_of(config, "LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))


# Request bodies larger than this answer 413 before any JSON is parsed; None (null in the
# environment) is Flask's "no limit".
MAX_CONTENT_LENGTH = 64 * 1024

# Milliseconds a SQLite writer waits for the lock before the request answers 503.
SQLITE_BUSY_TIMEOUT_MS = 5000

# NORMAL (with WAL): a commit survives any crash of the process or of gunicorn, but a power
# cut or kernel crash may roll back the last commits (never corrupting the file). FULL makes
# every acknowledged commit survive a power cut too, at about half the save throughput
# (an fsync per commit; bench/NOTES.md).
SQLITE_SYNCHRONOUS = "NORMAL"

# Connections per worker process in the PostgreSQL pool (see README, "Sizing the pool").
DATABASE_MAX_CONNECTIONS = 8
# Seconds a request waits for a pooled connection before answering 503.
DATABASE_POOL_TIMEOUT = 5
# Seconds a pooled connection lives: once older, it is closed when next taken from or given
# back to the pool, however busy (playhouse.pool counts from its opening); 0 never.
DATABASE_STALE_TIMEOUT = 300
# Seconds a PostgreSQL connection attempt may take.
DATABASE_CONNECT_TIMEOUT = 5
# Milliseconds a PostgreSQL statement waits for a lock (a row another request is changing,
# a table an index build holds) before the request answers 503, as SQLite's writers do after
# SQLITE_BUSY_TIMEOUT_MS. Each new connection's session gets it as lock_timeout unless the
# role, the database, PGOPTIONS or the URL already gave one; 0 sets nothing.
DATABASE_LOCK_TIMEOUT_MS = 5000
# Each pooled connection prepares the service's statements once (PREPARE/EXECUTE) instead of
# having them parsed and planned on every request. Prepared statements belong to a server
# session: set false behind PgBouncer in transaction mode.
DATABASE_PREPARED_STATEMENTS = True

# Level of the JSON log lines on standard error (a name in any case, or a number).
LOG_LEVEL = "INFO"

# Seconds a client is told to wait after a 503.
RETRY_AFTER_SECONDS = 5

# Comma-separated Fernet keys; the first encrypts, all decrypt. Empty: use instance/credentials.key.
ENCRYPTION_KEYS = ""

# Rate limits (SPEC section 11, README "Rate limits"); limit strings in the `limits` notation.
RATELIMIT_ENABLED = True
# Per API key, one budget across every /api/v2 route that needs a key.
RATELIMIT_DEFAULT = "600 per minute"
# Answers of 401 per client address; beyond it 429 before any key lookup.
RATELIMIT_AUTH_FAILURES = "30 per minute"
# memory:// counts per worker process; redis://host:port/db shares counters across workers
# and instances.
RATELIMIT_STORAGE_URI = "memory://"
# Prefix of the storage keys, so that several deployments can share one Redis database.
RATELIMIT_KEY_PREFIX = "potpie"
# Seconds Redis may take to connect or answer before it counts as down (then: fail open).
RATELIMIT_STORAGE_TIMEOUT = 0.5
