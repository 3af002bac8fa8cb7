"""WSGI entry point: `gunicorn wsgi:app -c gunicorn.conf.py`."""
import sys

from gunicorn.arbiter import Arbiter

from potpie_flask import START_REFUSALS, create_app, refusal_line

try:
    app = create_app()
except START_REFUSALS as exc:
    # The line alone, in one write, then gunicorn's "App failed to load" exit, which stops
    # the master rather than booting another worker. Any other exception was a traceback per
    # worker and gunicorn's own (173 lines for one mistyped log level); an AppImportError's
    # message gunicorn prints in two writes, and two workers failing at once ran their
    # lines into each other.
    sys.stderr.write(f"Error: {refusal_line(exc)}\n")
    sys.stderr.flush()
    raise SystemExit(Arbiter.APP_LOAD_ERROR) from None
