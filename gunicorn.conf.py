"""gunicorn settings for potpie-flask: `gunicorn wsgi:app -c gunicorn.conf.py`."""
import os

bind = "{}:{}".format(os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000"))
# Sync workers: one request each, no threads. One per core plus one, so that a core is not
# left idle while a worker waits for the database (a PostgreSQL round trip, SQLite's write
# lock). Measured on the 2-core benchmark machine, servers taking turns (bench/NOTES.md):
# save-create's ratio to /healthz with 3 workers against 2 was 0.423-0.431 against
# 0.405-0.411 on SQLite; against 4, 0.407 against 0.377; on PostgreSQL against 5, 0.260
# against 0.243 (a worker holding SQLite's write lock gets preempted; PostgreSQL's own
# processes need the same cores).
workers = int(os.environ.get("WEB_CONCURRENCY", (os.cpu_count() or 1) + 1))
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
