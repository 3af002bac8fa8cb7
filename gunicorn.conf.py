"""gunicorn settings for potpie-flask: `gunicorn wsgi:app -c gunicorn.conf.py`."""
import os

bind = "{}:{}".format(os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000"))
# Sync workers: one request each, no threads. A worker waiting for the database (a
# PostgreSQL round trip, or SQLite's write lock held by another worker) leaves its core
# idle, so gunicorn's recommended 2 x cores + 1 keeps the cores busy; measured on the
# 2-core benchmark machine, one worker per core left a third of the save throughput unused
# (README, Performance).
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * (os.cpu_count() or 1) + 1))
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
