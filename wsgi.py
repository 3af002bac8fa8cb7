"""WSGI entry point: `gunicorn wsgi:app -c gunicorn.conf.py`."""
from potpie_flask import create_app, require_encryption_keys

app = create_app()
require_encryption_keys(app)
