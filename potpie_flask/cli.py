"""Flask CLI: `db upgrade`, `keys create|list|revoke`, `crypto rotate`, and the shell context."""
import functools
import os

import click
from cryptography.fernet import InvalidToken
from flask import current_app
from flask.cli import AppGroup
from marshmallow import ValidationError

from . import crypto, migrations
from .auth import create_key
from .db import UNAVAILABLE_ERRORS, database
from .fields import check_text, stripped
from .models import LARGEST_INTEGER, ApiKey, AuditEvent, Integration, utcnow
from .representation import timestamp

db_cli = AppGroup("db", help="Manage the database schema.")
keys_cli = AppGroup("keys", help="Manage API keys.")
crypto_cli = AppGroup("crypto", help="Manage credential encryption.")


def unavailable_line(exc):
    """The one line that says a database cannot be reached or is locked, and why."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"the database is unavailable: {reason}"


def needs_database(command):
    """Answer one Error line, not a traceback, when the database cannot be reached or is locked."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UNAVAILABLE_ERRORS as exc:
            raise click.ClickException(unavailable_line(exc)) from None
    return run


def needs_schema(command):
    """Answer one Error line, not a traceback, when `db upgrade` has not run yet (PostgreSQL)."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        if migrations.current_version() == 0:
            raise click.ClickException(
                "the database has no schema yet: run `flask --app potpie_flask db upgrade` first")
        return command(*args, **kwargs)
    return run


def _ensure_key_file(instance_path):
    """Create the instance's key file unless it exists; say so on stderr when this call made it.

    Only PostgreSQL's `db upgrade` gets to make one (SQLite's setup has made its own as the
    app loaded), and over several instances a key of one host's own is the wrong one: what
    that host seals, no other instance can open.
    """
    if crypto.create_key_file(instance_path):
        path = os.path.join(instance_path, crypto.KEY_FILE_NAME)
        click.echo(f"created {path}, a key of this host's own: every instance over this "
                   "database needs the same keys (this file, or POTPIE_ENCRYPTION_KEYS)",
                   err=True)


@db_cli.command("upgrade")
@needs_database
def db_upgrade():
    """Create or upgrade the schema (safe to run again), and the key file if no key is set."""
    if not current_app.config["ENCRYPTION_KEYS"]:
        _ensure_key_file(current_app.instance_path)
    try:
        start, end = migrations.upgrade()
    except migrations.SchemaTooNew as exc:
        raise click.ClickException(str(exc)) from None
    # SQLite's schema was upgraded as the app loaded, before this command ran.
    start = min(start, current_app.extensions.pop("potpie_schema_at_start", start))
    click.echo(f"schema at version {end}" + (f" (was {start})" if start != end else " (up to date)"))


def _stored_text(ctx, param, value):
    """An option's text, stripped and held to the API's text rules and its ApiKey column."""
    if value is None:
        return None
    try:
        return check_text(stripped(value), min_length=1 if param.name == "user_id" else 0,
                          max_length=ApiKey._meta.fields[param.name].max_length)
    except ValidationError as exc:
        raise click.BadParameter(exc.messages[0]) from None


@keys_cli.command("create")
@click.option("--user-id", required=True, callback=_stored_text,
              help="The user the key acts for, e.g. user_abc123.")
@click.option("--email", default=None, callback=_stored_text,
              help="The user's email, for your records.")
@click.option("--label", default="", callback=_stored_text,
              help="What the key is for, e.g. 'ci' or 'laptop'.")
@needs_database
@needs_schema
def keys_create(user_id, email, label):
    """Create a key; it is printed once, alone on the last line."""
    row, key = create_key(user_id, email, label)
    click.echo(f"created key {row.id} for {row.user_id} (shown once, store it now):")
    click.echo(key)


@keys_cli.command("list")
@click.option("--user-id", default=None, callback=_stored_text, help="Only this user's keys.")
@needs_database
@needs_schema
def keys_list(user_id):
    """List keys: id, user, label, first 7 characters, created, revoked."""
    query = ApiKey.select().order_by(ApiKey.id)
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    click.echo("id\tuser_id\tlabel\tprefix\tcreated_at\trevoked_at")
    for row in query:
        click.echo("\t".join(str(v) for v in (
            row.id, row.user_id, row.label, row.prefix, timestamp(row.created_at),
            timestamp(row.revoked_at) if row.revoked_at else "-")))


@keys_cli.command("revoke")
@click.argument("key_id", type=int)
@needs_database
@needs_schema
def keys_revoke(key_id):
    """Revoke a key by id; it is refused from the next request on."""
    if not 1 <= key_id <= LARGEST_INTEGER:
        raise click.ClickException(f"no key with id {key_id}")  # and none the driver can bind
    updated = (ApiKey.update(revoked_at=utcnow())
               .where((ApiKey.id == key_id) & ApiKey.revoked_at.is_null()).execute())
    if not updated:
        if ApiKey.get_or_none(ApiKey.id == key_id) is None:
            raise click.ClickException(f"no key with id {key_id}")
        click.echo(f"key {key_id} was already revoked")
        return
    click.echo(f"revoked key {key_id}")


@crypto_cli.command("rotate")
@needs_database
@needs_schema
def crypto_rotate():
    """Re-encrypt every stored credential with the first key."""
    vault = current_app.extensions["potpie_vault"]
    if vault is None:
        raise click.ClickException("no encryption key configured (POTPIE_ENCRYPTION_KEYS)")
    rotated = 0
    with database.atomic():
        for row in Integration.select(Integration.id, Integration.credentials).where(
                Integration.credentials.is_null(False)):
            rotated += _rotate_one(vault, row.id, row.credentials)
    click.echo(f"re-encrypted {rotated} credential(s)")


def _rotate_one(vault, integration_id, token):
    """Re-encrypt one integration's credentials under the first key; 1 when rewritten, else 0."""
    while token is not None and not vault.uses_first_key(token):
        try:
            rotated = vault.rotate(token)
        except InvalidToken:
            # The transaction rolls back: nothing is half rotated.
            raise click.ClickException(
                f"the credentials of integration {integration_id} decrypt with none of the "
                "configured keys: keep the key they were stored with in "
                "POTPIE_ENCRYPTION_KEYS (after the new first key) until rotate has "
                "run; nothing was re-encrypted") from None
        # Written only over the token read: on PostgreSQL a request may have stored new
        # credentials since (the service runs on while rotate does).
        if Integration.update(credentials=rotated).where(
                (Integration.id == integration_id)
                & (Integration.credentials == token)).execute():
            return 1
        token = (Integration.select(Integration.credentials)
                 .where(Integration.id == integration_id).scalar())
    return 0


def init_app(app):
    """Register the command groups and what `flask shell` preloads."""
    for group in (db_cli, keys_cli, crypto_cli):
        app.cli.add_command(group)

    @app.shell_context_processor
    def shell_context():
        return {"app": app, "db": database, "Integration": Integration,
                "ApiKey": ApiKey, "AuditEvent": AuditEvent}
