"""WSGI entry point: `gunicorn wsgi:app -c gunicorn.conf.py`."""
from gunicorn.errors import AppImportError

from potpie_flask import START_REFUSALS, create_app, refusal_line

try:
    app = create_app()
except START_REFUSALS as exc:
    # gunicorn prints an AppImportError's message alone and stops. Any other exception was
    # a traceback per worker and gunicorn's own (173 lines for one mistyped log level).
    raise AppImportError(f"Error: {refusal_line(exc)}") from None
