"""API keys: generation, hashing, and the x-api-key check of the API blueprint."""
import hashlib
import re
import secrets

from flask import g, request

from .errors import DetailError
from .models import ApiKey, utcnow
from .statements import Statement, slot

KEY_PATTERN = re.compile(r"sk-[0-9a-f]{64}")
# Never show more of a key than this (e.g. "sk-1a2b").
SHOWN_PREFIX = 7
_CHALLENGE = {"WWW-Authenticate": "ApiKey"}


def generate_key():
    """A new API key: sk- and 64 lowercase hex characters from `secrets`."""
    return "sk-" + secrets.token_hex(32)


def hash_key(key):
    """The SHA-256 hex digest under which a key is stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(user_id, email=None, label=""):
    """Store a new key for a user; returns (row, key). The key itself is never stored."""
    key = generate_key()
    row = ApiKey.create(
        user_id=user_id,
        email=email,
        label=label,
        key_hash=hash_key(key),
        prefix=key[:SHOWN_PREFIX],
        created_at=utcnow(),
    )
    return row, key


_OWNER_OF_HASH = Statement(lambda: ApiKey.select(ApiKey.user_id).where(
    (ApiKey.key_hash == slot("key_hash", ApiKey.key_hash)) & ApiKey.revoked_at.is_null()).limit(1))


def owner_of(key):
    """The user_id of an unrevoked key, or None."""
    if not KEY_PATTERN.fullmatch(key):
        return None
    row = _OWNER_OF_HASH.execute(key_hash=hash_key(key)).fetchone()
    return row[0] if row else None


class AuthenticationFailed(DetailError):
    """401 with the ApiKey challenge."""

    def __init__(self, detail):
        super().__init__(401, detail, _CHALLENGE)


def sent_key():
    """The request's x-api-key header without surrounding spaces and tabs; "" when there is none."""
    # HTTP's own whitespace around a field value (RFC 9110, 5.5): str.strip() also took
    # U+001C-U+001F, NEL and NBSP, so a key sent with those around it passed.
    return request.headers.get("x-api-key", "").strip(" \t")


def require_api_key():
    """before_request hook: set g.user_id from x-api-key or answer 401."""
    key = sent_key()
    if not key:
        raise AuthenticationFailed("API key is required")
    user_id = owner_of(key)
    if user_id is None:
        raise AuthenticationFailed("Invalid API key")
    g.user_id = user_id
