"""gunicorn settings for potpie-flask: `gunicorn wsgi:app -c gunicorn.conf.py`."""
import os
import subprocess
import sys


def _whole_number(name, least, most=None, default=None):
    """The environment's `name` as a whole number in [least, most]; `default` when unset or empty.

    Read with int(), a typo such as `GUNICORN_TIMEOUT=30s` stopped gunicorn with a traceback,
    `WEB_CONCURRENCY=0` started a master with no worker to answer, and `PORT=99999` failed
    in bind(): one Error line naming the variable instead, as the service's own settings give.
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    bounds = f"{least} or more" if most is None else f"{least} to {most}"
    number = int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None
    if number is None or number < least or (most is not None and number > most):
        raise SystemExit(f"Error: {name} must be a whole number, {bounds}; got {text!r}")
    return number


bind = "{}:{}".format(os.environ.get("HOST", "127.0.0.1"),
                      _whole_number("PORT", 0, 65535, default=8000))
# Sync workers: one request each, no threads. One per core plus one on SQLite, plus two on
# PostgreSQL, so that no core sits idle while workers wait for the database (a round trip;
# on PostgreSQL also a COMMIT's flush to disk: with three workers on the 2-core benchmark
# machine, 7-8% of the CPU sat idle under PostgreSQL's writes, 3-5% with four). Measured
# there with servers taking turns (bench/NOTES.md), ratios to /healthz:
# - SQLite save-create: 3 workers 0.423-0.431 against 2 workers' 0.405-0.411, and 0.430
#   against 4 workers' 0.418 (a worker holding SQLite's write lock gets preempted);
# - PostgreSQL: 4 workers against 3, save-create 0.291 against 0.286, one-row PATCH 0.278
#   against 0.266, GET one 0.535 against 0.543; 5 against 3, save-create 0.243 against
#   0.260 (PostgreSQL's own processes need the same cores).


def _serves_postgresql():
    """Whether the configuration names PostgreSQL, asked of a child process.

    Imported here, the app's modules would sit in the master, shared with every worker until
    it writes to their pages: a worker's RSS then grew by 10.6-12.7% over bench/run.py's
    run (at most 4.4% otherwise), its pages copied one by one.
    """
    answer = subprocess.run(
        [sys.executable, "-c", "import potpie_flask; print(potpie_flask.serves_postgresql())"],
        cwd=os.path.dirname(os.path.abspath(__file__)), stdout=subprocess.PIPE, text=True)
    if answer.returncode:
        # Why (an instance/config.py that does not run, say) is on standard error already,
        # in the child's words: not again under a CalledProcessError of this file's.
        raise SystemExit(answer.returncode)
    return answer.stdout.strip() == "True"


workers = (_whole_number("WEB_CONCURRENCY", 1)
           or (os.cpu_count() or 1) + (2 if _serves_postgresql() else 1))
worker_class = "sync"
# No preload: the PostgreSQL pool and SQLite connections are not fork-safe, so every
# worker imports the app and opens its own connections after the fork.
preload_app = False
# 0: no limit, as gunicorn reads it.
timeout = _whole_number("GUNICORN_TIMEOUT", 0, default=30)
# On SIGTERM, workers finish the requests they hold for up to this many seconds.
graceful_timeout = _whole_number("GUNICORN_GRACEFUL_TIMEOUT", 0, default=30)
keepalive = 5
# gunicorn 25.1+ opens a control socket at one path per user ($XDG_RUNTIME_DIR/gunicorn.ctl,
# else $HOME/.gunicorn/gunicorn.ctl): a second instance on the host took it over, and
# stopping either deleted it. The service documents no use for it (gunicorn before 25.1
# ignores the name).
control_socket_disable = True
accesslog = None
errorlog = "-"
