"""gunicorn settings for potpie-flask: `gunicorn wsgi:app -c gunicorn.conf.py`."""
import os

bind = "{}:{}".format(os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000"))
# Sync workers: one request each, no threads. One per core plus one, so that a core is not
# left idle while a worker waits for the database (a PostgreSQL round trip, SQLite's write
# lock). Measured on the 2-core benchmark machine (README, Performance): 3 workers saved
# 30-40% more per second than 2 on both databases, and 5 no more than 3 (a worker holding
# SQLite's write lock gets preempted; PostgreSQL's own processes need the same cores). On a
# host three times faster, 2 and 3 workers were within the runs' noise and 4 slower.
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
