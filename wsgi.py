"""WSGI entry point: `gunicorn wsgi:app -c gunicorn.conf.py`."""
from potpie_flask import create_app

app = create_app()
