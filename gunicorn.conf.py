"""gunicorn settings for potpie-flask: `gunicorn wsgi:app -c gunicorn.conf.py`."""
import os

bind = "{}:{}".format(os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000"))
# Requests are short and CPU-bound (validation, encryption, JSON), so one sync worker per
# core keeps both cores busy without the context switches of threads.
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 2))
worker_class = "sync"
# No preload: the PostgreSQL pool and SQLite connections are not fork-safe, so every
# worker imports the app and opens its own connections after the fork.
preload_app = False
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# On SIGTERM, workers finish the requests they hold for up to this many seconds.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
accesslog = None
errorlog = "-"
