"""potpie-flask: third-party integrations of an API key's owner, stored and served over HTTP."""
import os

import click
from flask import Flask
from flask.cli import FlaskGroup

from . import api, cli, config, crypto, db, docs, errors, logs, migrations, ops, ratelimit
from .json_provider import OrjsonProvider


# What refuses a start: a setting, a key missing, a schema too new, the database unreachable.
START_REFUSALS = (config.ConfigError, crypto.MissingKeyError, migrations.SchemaTooNew,
                  *db.UNAVAILABLE_ERRORS)


def create_app(test_config=None):
    """Build the application: package defaults < instance/config.py < POTPIE_* < test_config."""
    try:
        return _built_app(test_config)
    except START_REFUSALS as exc:
        if _serving():
            raise
        # A Flask command loads the app before it runs: one Error line, as its own failures
        # give, not a traceback.
        raise click.ClickException(refusal_line(exc)) from None


def refusal_line(exc):
    """What a start refused with `exc` (one of START_REFUSALS) says, in one line."""
    if isinstance(exc, db.UNAVAILABLE_ERRORS):
        return cli.unavailable_line(exc)
    return str(exc)


def _built_app(test_config):
    app = configured_flask(test_config)
    config.check(app.config)
    # Its owner's alone when created here: it holds the key file and the SQLite database.
    try:
        os.makedirs(app.instance_path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise config.ConfigError(
            f"the instance folder {app.instance_path} cannot be created ({exc.strerror}): "
            "POTPIE_INSTANCE_PATH names the folder to use") from None
    app.json = OrjsonProvider(app)
    app.json.sort_keys = False
    # Bodies are UTF-8 JSON, and say so (SPEC section 1).
    app.json.mimetype = "application/json; charset=utf-8"

    # No route documents OPTIONS: it answers the routing 405 in JSON, with or without a key
    # (SPEC sections 1 and 3). Flask's automatic answer was an empty text/html page.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False

    logs.init_app(app)
    db.init_app(app)
    errors.init_app(app)
    ratelimit.init_app(app)
    app.register_blueprint(ops.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(docs.bp)
    cli.init_app(app)

    embedded = not db.is_postgresql(app.config["DATABASE_URL"])
    app.extensions["potpie_vault"] = _vault(app, create_key_file=embedded)
    serving = _serving()
    if serving:
        _require_encryption_keys(app)
    if embedded:
        upgraded_from = _upgrade_embedded_database()
        if not serving:
            # What `db upgrade` reports, when it is the command that loaded the app.
            app.extensions["potpie_schema_at_start"] = upgraded_from
    return app


def configured_flask(test_config=None):
    """A Flask app holding the service's configuration, and nothing else: no database, no routes."""
    instance_path = os.environ.get("POTPIE_INSTANCE_PATH") or None
    app = Flask(
        __name__,
        # No static files to serve (the docs page serves its own assets): no /static route,
        # whose automatic OPTIONS would answer before PROVIDE_AUTOMATIC_OPTIONS is read.
        static_folder=None,
        instance_relative_config=True,
        instance_path=os.path.abspath(instance_path) if instance_path else None,
    )
    # A path with a doubled slash names no route (404 in JSON): merged, werkzeug answered it
    # with a 308 and an HTML page that no error handler sees (SPEC section 1).
    app.url_map.merge_slashes = False
    app.config.from_object("potpie_flask.config")
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env("POTPIE")
    # Read verbatim: from_prefixed_env would parse it as JSON.
    if os.environ.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = os.environ["DATABASE_URL"]
    if test_config:
        app.config.update(test_config)
    app.config.setdefault("DATABASE_URL", db.default_url(app.instance_path))
    return app


def serves_postgresql():
    """True when the configuration, as create_app reads it, names a PostgreSQL database."""
    return db.is_postgresql(configured_flask().config["DATABASE_URL"])


def _vault(app, create_key_file):
    configured = app.config["ENCRYPTION_KEYS"]
    keys = crypto.parse_keys(",".join(configured) if isinstance(configured, list) else configured)
    source = "POTPIE_ENCRYPTION_KEYS"
    if not keys:
        keys = (crypto.ensure_key_file if create_key_file else crypto.read_key_file)(
            app.instance_path)
        source = os.path.join(app.instance_path, crypto.KEY_FILE_NAME)
    if not keys:
        return None
    try:
        return crypto.Vault(keys)
    except ValueError as exc:  # from Fernet; its message names no key, and neither does this
        raise config.ConfigError(f"{source}: {exc} (a key from Fernet.generate_key(); "
                                 "several are separated by commas)") from None


def _serving():
    """Whether the app is built to answer requests: by a WSGI server, or `flask run`.

    The other Flask commands build it too, and need no key: `db upgrade` creates the key
    file, `keys` never touches credentials, `flask shell` is for looking.
    """
    command = click.get_current_context(silent=True)
    if command is None or not isinstance(command.find_root().command, FlaskGroup):
        return True  # a WSGI server, click-based or not
    return command.info_name == "run"


def _upgrade_embedded_database():
    """Create or upgrade the default SQLite setup's schema on start; returns the version before."""
    with db.database.connection_context():
        return migrations.upgrade()[0]


def _require_encryption_keys(app):
    """Refuse to serve without an encryption key: workers must never invent their own.

    Only PostgreSQL gets here keyless (SQLite's setup creates its key file). The keys the
    other instances use come first in the advice: a host whose secret store forgot them,
    given a key of its own, would seal credentials that no other instance can open.
    """
    if app.extensions["potpie_vault"] is None:
        raise crypto.MissingKeyError(
            "No encryption key: set POTPIE_ENCRYPTION_KEYS (comma-separated Fernet keys) to "
            "the keys every other instance over this database uses; for the first instance, "
            "`flask --app potpie_flask db upgrade` creates "
            f"{os.path.join(app.instance_path, crypto.KEY_FILE_NAME)}.")
