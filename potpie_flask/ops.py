"""Health and readiness probes for load balancers; no key needed."""
import logging

from flask import Blueprint, jsonify

from .db import database

bp = Blueprint("ops", __name__)
log = logging.getLogger("potpie_flask")


@bp.get("/healthz")
def healthz():
    """The process answers; the database is not touched."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """The database answers SELECT 1."""
    try:
        database.execute_sql("SELECT 1").fetchone()
    except Exception as exc:  # any failure means "not ready", never a 500
        log.warning("readiness check failed: %s", type(exc).__name__)
        return jsonify(status="unavailable"), 503
    return jsonify(status="ready")
