"""Throughput benchmark: gunicorn + wrk against SQLite (and PostgreSQL), as ratios to /healthz.

Usage: .venv/bin/python bench/run.py [--pg URL] [--duration 10] [--connections 32]
                                     [--sqlite-only] [--limiter [--redis URL]]

It makes its own data (a fresh instance folder, keys through the CLI, 100,000
integrations over 1,000 owners; on PostgreSQL vacuumed and analyzed, as autovacuum would
have by then), starts the service with the project's
gunicorn.conf.py on a free loopback port, drives each scenario with wrk (pinned
to one core with taskset where available), each between two runs of /healthz (the
mean of which is its ratio's ceiling), and prints one table per backend, headed by what it
read of the host: its processor, how fast a Python loop ran, on PostgreSQL a round trip and
a commit's latency, and how much of the CPU the hypervisor stole, and how much sat idle on
I/O, during the run.
It asserts nothing: the figures are for the README, bench/NOTES.md and the issue notes.
"""
import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import psycopg2.errors

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from potpie_flask.db import is_postgresql  # noqa: E402
from tests.databases import run_admin  # noqa: E402
from tests.servers import Gunicorn, flask_cli  # noqa: E402  (the tests' server helper)

LUA = Path(__file__).resolve().parent / "lua"
OWNERS = 1000
PER_OWNER = 100
LIST_OWNER_SIZE = 200
WARM_UP_REQUESTS = 1000
RSS_AFTER_REQUESTS = 100_000
LIMITER_ROUNDS = 2


def ensure_wrk():
    if shutil.which("wrk"):
        return
    print("installing wrk (Debian package)...", file=sys.stderr)
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    if subprocess.run(install, stdout=subprocess.DEVNULL).returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(install, check=True, stdout=subprocess.DEVNULL)


def seed(env, owner):
    """100,000 integrations over 1,000 owners, and LIST_OWNER_SIZE for `owner`."""
    code = f"""
import datetime as dt, uuid
from potpie_flask import create_app
from potpie_flask.db import database
from potpie_flask.integrations import name_key
from potpie_flask.models import Integration
app = create_app()
now = dt.datetime(2026, 1, 1)
def row(owner, i):
    iid = str(uuid.uuid4())
    name = f"integration {{i}}"
    return dict(id=iid, owner=owner, name=name, name_key=name_key(name),
                integration_type="sentry", status="active", active=True,
                unique_identifier=f"sentry-{{iid}}", created_at=now + dt.timedelta(seconds=i),
                updated_at=now, org_slug="acme", instance_name=name, created_via="bench",
                tags="[]")
with app.app_context(), database.connection_context():
    rows = [row(f"owner_{{o}}", i) for o in range({OWNERS}) for i in range({PER_OWNER})]
    rows += [row({owner!r}, i) for i in range({LIST_OWNER_SIZE})]
    with database.atomic():
        for start in range(0, len(rows), 500):
            Integration.insert_many(rows[start:start + 500]).execute()
"""
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=600)


def base_env():
    """This environment without the service's own settings, the rate limiter off."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("POTPIE_") and k != "DATABASE_URL"}
    base["POTPIE_RATELIMIT_ENABLED"] = "false"
    return base


def postgresql_env(base, tmp):
    """`base` for servers on PostgreSQL: an instance folder of their own and a Fernet key.

    The caller adds DATABASE_URL.
    """
    from cryptography.fernet import Fernet
    return dict(base, POTPIE_INSTANCE_PATH=os.path.join(tmp, "pg"),
                POTPIE_ENCRYPTION_KEYS=Fernet.generate_key().decode())


def database_url(url, name):
    """The server URL `url` with database `name` in place of its own."""
    return urlsplit(url)._replace(path="/" + name).geturl()


def seeded_keys(env):
    """Schema, keys and the seeded rows in the database `env` names, settled; the keys by owner.

    The list scenario reads bench_list, which holds exactly LIST_OWNER_SIZE integrations
    whatever the save scenarios add to bench_owner.
    """
    flask_cli(env, "db", "upgrade")
    keys = {owner: flask_cli(env, "keys", "create", "--user-id", owner).split()[-1]
            for owner in ("bench_owner", "bench_list")}
    seed(env, "bench_list")
    settle(env)
    return keys


@contextlib.contextmanager
def autocommit(url):
    """A psycopg2 connection to `url` outside any transaction (as VACUUM and CREATE DATABASE
    must run), closed afterwards."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def settle(env):
    """Flush the seed to disk, and on PostgreSQL do what autovacuum would have done by now.

    This machine's PostgreSQL runs with autovacuum off: a database seeded just now has no
    planner statistics and no visibility map, so its list pages were sorted after a bitmap
    scan instead of read off the index in order (0.43 ms against 0.24 a page). A deployed
    database has both. The CHECKPOINT writes the seed's pages before any scenario starts
    rather than during one.
    """
    url = env.get("DATABASE_URL", "")
    if is_postgresql(url):
        with autocommit(url) as conn, conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
            try:
                cur.execute("CHECKPOINT")
            except psycopg2.errors.InsufficientPrivilege:
                pass  # only a superuser or pg_checkpoint may; the seed is then written later
    os.sync()


def wrk(url, script, duration, connections, env_vars):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script:
        cmd += ["-s", str(LUA / script)]
    cmd.append(url)
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0"] + cmd
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env_vars},
                          timeout=duration + 60, check=True)
    try:
        return parse_wrk(done.stdout)
    except (AttributeError, ValueError):
        raise RuntimeError("unexpected wrk output:\n" + done.stdout + done.stderr) from None


def _ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    count = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50": p50, "p99": p99, "count": count,
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


def python_loop_ns(iterations=2_000_000):
    """The host's speed for Python itself: ns an iteration of a bare counting loop."""
    i, start = 0, time.perf_counter()
    while i < iterations:
        i += 1
    return (time.perf_counter() - start) / iterations * 1e9


def cpu_model():
    """The processor's name as /proc/cpuinfo gives it, and the count of cores.

    Hosts of one kind are not always the same processor, and the ratios move with it.
    """
    names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    return f"{names[0] if names else 'an unnamed processor'}, {os.cpu_count()} cores"


def cpu_ticks():
    """The host's CPU time so far, by /proc/stat's first eight fields (user ... steal)."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def stolen_and_iowait(before, after):
    """Percentages of the CPU time between two cpu_ticks() stolen by the hypervisor, and idle on I/O."""
    spent = [b - a for a, b in zip(before, after)]
    total = sum(spent) or 1
    return spent[7] / total * 100, spent[4] / total * 100


def postgresql_latencies(url):
    """µs of a SELECT 1 round trip, and of a one-row UPDATE committed (a WAL flush each, with
    PostgreSQL's default synchronous_commit)."""
    def mean_us(run, times):
        start = time.perf_counter()
        for _ in range(times):
            run()
        return (time.perf_counter() - start) / times * 1e6

    with autocommit(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE bench_probe (id int PRIMARY KEY, n int NOT NULL)")
        cur.execute("INSERT INTO bench_probe VALUES (1, 0)")
        round_trip = mean_us(lambda: cur.execute("SELECT 1"), 500)
        commit = mean_us(lambda: cur.execute("UPDATE bench_probe SET n = n + 1"), 200)
        cur.execute("DROP TABLE bench_probe")
    return round_trip, commit


def worker_pids(server):
    """The gunicorn workers: the master's children."""
    return Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()


def worker_rss(server):
    """RSS in MiB of each gunicorn worker."""
    rss = []
    for pid in worker_pids(server):
        status = Path(f"/proc/{pid}/status").read_text()
        rss.append(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024)
    return rss


def warm_up(server, key, one_id, count):
    """`count` requests over every scenario's route, before the first RSS reading."""
    for i in range(count // 4):
        server.request("GET", "/healthz")
        server.request("GET", f"/api/v2/integrations/{one_id}", key=key)
        server.request("GET", "/api/v2/integrations?limit=50", key=key)
        server.request("POST", "/api/v2/integrations/save",
                       {"name": f"warm {uuid.uuid4()}", "integration_type": "slack"}, key)


def run_backend(label, env, args, host=""):
    """Seed, serve and measure one backend; print its table. `host`: what was read of the host."""
    loop_ns = python_loop_ns()
    keys = seeded_keys(env)
    ticks = cpu_ticks()
    key, list_key = keys["bench_owner"], keys["bench_list"]
    with Gunicorn(env, workers=None) as server:
        one = server.request("POST", "/api/v2/integrations/save",
                             {"name": "bench one", "integration_type": "jira",
                              "auth_data": {"access_token": "bench-token"}}, key)[1]["data"]
        one_path = f"/api/v2/integrations/{one['integration_id']}"
        spread_ids = [row["integration_id"] for row in server.request(
            "GET", f"/api/v2/integrations?limit={LIST_OWNER_SIZE}", key=list_key)[1]["data"]]
        run = uuid.uuid4().hex[:8]
        writer = {"POTPIE_KEY": key, "POTPIE_RUN": run}
        scenarios = [
            ("save-create", "/api/v2/integrations/save", "save_create.lua", writer),
            ("save-upsert", "/api/v2/integrations/save", "save_upsert.lua", writer),
            ("GET one", one_path, "get.lua", writer),
            ("list (page of 50)", "/api/v2/integrations?limit=50", "get.lua",
             {"POTPIE_KEY": list_key}),
            ("PATCH (one row)", one_path, "patch.lua", writer),
            # The same change over the list owner's rows in turn: no row lock waits for
            # another (on PostgreSQL, the one-row PATCH queues on a single row's lock).
            ("PATCH (200 rows in turn)", "/", "patch.lua",
             {"POTPIE_KEY": list_key, "POTPIE_IDS": ",".join(spread_ids)}),
        ]
        warm_up(server, key, one["integration_id"], WARM_UP_REQUESTS)
        served = WARM_UP_REQUESTS
        rss_start = worker_rss(server)
        # /healthz before the first scenario and again after each one: the host's speed drifts
        # within a run, so each scenario's ratio is to the mean of the two /healthz runs
        # around it (ten seconds either side), not to one ceiling measured minutes away.
        ceilings = [wrk(server.url + "/healthz", None, args.duration, args.connections, writer)]
        results = []
        for name, path, script, lua_env in scenarios:
            result = wrk(server.url + path, script, args.duration, args.connections, lua_env)
            ceilings.append(wrk(server.url + "/healthz", None, args.duration, args.connections,
                                writer))
            served += ceilings[-1]["count"] + result["count"]
            results.append((name, result, (ceilings[-2]["rps"], ceilings[-1]["rps"])))
        served += ceilings[0]["count"]
        while served < RSS_AFTER_REQUESTS:
            served += wrk(server.url + one_path, "get.lua", args.duration, args.connections,
                          writer)["count"]
        rss_end = worker_rss(server)
    stolen, iowait = stolen_and_iowait(ticks, cpu_ticks())
    print(f"\n{label} ({args.connections} connections, {args.duration}s each, "
          f"{len(rss_start)} gunicorn workers)")
    # The host's state, to read the ratios by: its speed moves them from run to run.
    print(f"host: {cpu_model()}; a Python loop ran {loop_ns:.0f} ns an iteration before the "
          f"run{host}; over the run the CPU was {stolen:.1f}% stolen by the hypervisor, "
          f"{iowait:.1f}% idle on I/O")
    print("| scenario | req/s | p50 ms | p99 ms | /healthz before, after, req/s | ratio | non-2xx |")
    print("|---|---|---|---|---|---|---|")
    rates = [c["rps"] for c in ceilings]
    print(f"| /healthz | {sum(rates) / len(rates):.0f} (mean of {len(rates)}) | "
          f"{max(c['p50'] for c in ceilings):.2f} (max) | {max(c['p99'] for c in ceilings):.2f} (max) "
          f"| {min(rates):.0f}-{max(rates):.0f} | 1.000 | {sum(c['non2xx'] for c in ceilings)} |")
    # Three decimals: at two, 0.445 printed as 0.45 and read as meeting a target of 0.45.
    for name, r, (before, after) in results:
        print(f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {before:.0f}, "
              f"{after:.0f} | {r['rps'] / ((before + after) / 2):.3f} | {r['non2xx']} |")
    growth = ", ".join(f"{(end / start - 1) * 100:+.1f}%" for start, end in zip(rss_start, rss_end))
    print(f"worker RSS MiB after {WARM_UP_REQUESTS:,} requests: "
          + ", ".join(f"{v:.1f}" for v in rss_start)
          + f"; after {served:,}: " + ", ".join(f"{v:.1f}" for v in rss_end) + f" ({growth})")


def limiter_cost(env, args):
    """save-create with the rate limiter off, on in memory, on in Redis: servers taking turns."""
    key = flask_cli(env, "keys", "create", "--user-id", "bench_limiter").split()[-1]
    stores = [("off", {"POTPIE_RATELIMIT_ENABLED": "false"}),
              ("memory://", {"POTPIE_RATELIMIT_ENABLED": "true"})]
    if args.redis:
        stores.append(("Redis", {"POTPIE_RATELIMIT_ENABLED": "true",
                                 "POTPIE_RATELIMIT_STORAGE_URI": args.redis,
                                 "POTPIE_RATELIMIT_KEY_PREFIX": f"bench{uuid.uuid4().hex[:8]}"}))
    rps = {label: [] for label, _ in stores}
    for _ in range(LIMITER_ROUNDS):
        for label, extra in stores:
            # A budget no run can spend: the limiter counts every request but refuses none.
            limited = dict(env, POTPIE_RATELIMIT_DEFAULT="100000000 per minute", **extra)
            with Gunicorn(limited, workers=None) as server:
                rps[label].append(wrk(server.url + "/api/v2/integrations/save", "save_create.lua",
                                      args.duration, args.connections,
                                      {"POTPIE_KEY": key, "POTPIE_RUN": uuid.uuid4().hex[:8]})["rps"])
    print(f"\nRate limiter on save-create (SQLite; {LIMITER_ROUNDS} rounds, servers taking turns)")
    print("| limiter | req/s per round | mean | ratio to off |")
    print("|---|---|---|---|")
    off = sum(rps["off"]) / LIMITER_ROUNDS
    for label, values in rps.items():
        mean = sum(values) / LIMITER_ROUNDS
        print(f"| {label} | {', '.join(f'{v:.0f}' for v in values)} | {mean:.0f} | {mean / off:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default=os.environ.get("POTPIE_TEST_DATABASE_URL"),
                        help="PostgreSQL server URL (a fresh database is created and dropped)")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--limiter", action="store_true",
                        help="also measure the rate limiter's cost on save-create (SQLite)")
    parser.add_argument("--redis", default=os.environ.get("POTPIE_TEST_REDIS_URL"),
                        help="Redis URL for --limiter's shared-storage run")
    args = parser.parse_args()
    ensure_wrk()
    base = base_env()
    with tempfile.TemporaryDirectory(prefix="potpie-bench-") as tmp:
        env = dict(base, POTPIE_INSTANCE_PATH=os.path.join(tmp, "sqlite"))
        run_backend("SQLite", env, args)
        if args.limiter:
            limiter_cost(env, args)
        if args.pg and not args.sqlite_only:
            run_postgresql(base, tmp, args)


def run_postgresql(base, tmp, args):
    admin, name = run_admin(args.pg, "bench")
    with contextlib.closing(admin):
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        try:
            env = dict(postgresql_env(base, tmp), DATABASE_URL=database_url(args.pg, name))
            round_trip, commit = postgresql_latencies(env["DATABASE_URL"])
            run_backend("PostgreSQL", env, args, f"; a SELECT 1 round trip took "
                        f"{round_trip:.0f} µs and a one-row UPDATE committed {commit:.0f} µs")
        finally:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
