"""Fernet encryption of stored credentials, with keys that rotate (MultiFernet)."""
import os
import tempfile

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

KEY_FILE_NAME = "credentials.key"


class MissingKeyError(RuntimeError):
    """No encryption key is configured where none may be invented."""


class Vault:
    """Encrypts and decrypts the secret parts of auth_data; the first key encrypts, all decrypt."""

    def __init__(self, keys):
        if not keys:
            raise MissingKeyError("no encryption key configured")
        fernets = [Fernet(k) for k in keys]
        self._first = fernets[0]
        self._fernet = MultiFernet(fernets)

    def seal(self, secrets):
        """Encrypt a dict of secrets into one token."""
        return self._fernet.encrypt(orjson.dumps(secrets, option=orjson.OPT_SORT_KEYS)).decode()

    def open(self, token):
        """Decrypt a token made by seal()."""
        return orjson.loads(self._fernet.decrypt(token.encode()))

    def rotate(self, token):
        """Re-encrypt a token under the first key."""
        return self._fernet.rotate(token.encode()).decode()

    def uses_first_key(self, token):
        """True when the token decrypts with the first key alone."""
        try:
            self._first.decrypt(token.encode())
        except InvalidToken:
            return False
        return True


def parse_keys(value):
    """Split a comma-separated key list, ignoring blanks."""
    return [k.strip() for k in str(value or "").split(",") if k.strip()]


def read_key_file(instance_path):
    """Keys stored in the instance folder's key file, or [] when there is none."""
    try:
        with open(os.path.join(instance_path, KEY_FILE_NAME)) as fh:
            return parse_keys(fh.read().replace("\n", ","))
    except FileNotFoundError:
        return []


def ensure_key_file(instance_path):
    """Create the instance key file (mode 0600) unless it exists; returns its keys."""
    create_key_file(instance_path)
    return read_key_file(instance_path)


def create_key_file(instance_path):
    """Create the instance key file (mode 0600) unless it exists; True when this call made it.

    The key is written to a private temporary file that is then hard-linked into
    place: link() fails when the name exists, so concurrent starts agree on the
    first key written and nobody ever reads a half-written file.
    """
    os.makedirs(instance_path, mode=0o700, exist_ok=True)
    target = os.path.join(instance_path, KEY_FILE_NAME)
    fd, tmp = tempfile.mkstemp(dir=instance_path, prefix=".credentials-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(Fernet.generate_key().decode() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
    finally:
        os.unlink(tmp)
    return True
