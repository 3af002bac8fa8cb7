"""Servers taking turns: one scenario on several variants of the service, as ratios to /healthz.

Usage: .venv/bin/python bench/turns.py LABEL=PATH[:VAR=VALUE,...] ...
           [--scenario create|upsert|get|list|patch] [--rounds 3] [--duration 10]
           [--connections 32] [--pg URL]

Each variant is a checkout of the service (PATH: this one, or a `git worktree` of
another revision) with environment variables of its own, e.g. `WEB_CONCURRENCY=2`, or
`ABLATE=writes` to serve bench/ablation.py, which switches parts of a save off. Every
round starts each variant in turn on the same data: a copy of one database seeded as
bench/run.py seeds its own (on PostgreSQL, `CREATE DATABASE ... TEMPLATE`), and runs
the scenario between two runs of /healthz. The host's speed drifts by more than most
changes move a ratio, so variants alternate within a round rather than run one after
the other. It prints each run's ratio, p99 and the workers' CPU time per request (from
/proc), then each variant's mean. Like bench/run.py, it asserts nothing.

The data is made by this checkout's code (schema, keys, rows): a variant whose schema
differs needs a run from its own checkout. `ABLATE` takes save-create apart and is refused
with any other scenario.
"""
import argparse
import itertools
import os
import re
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from run import (base_env, database_url, ensure_wrk, postgresql_env, seeded_keys,  # noqa: E402
                 worker_pids, wrk)
from tests.databases import run_admin  # noqa: E402
from tests.servers import Gunicorn  # noqa: E402

SCENARIOS = {  # name: (path, Lua script, whose key)
    "create": ("/api/v2/integrations/save", "save_create.lua", "bench_owner"),
    "upsert": ("/api/v2/integrations/save", "save_upsert.lua", "bench_owner"),
    "get": ("/api/v2/integrations/{one}", "get.lua", "bench_owner"),
    "list": ("/api/v2/integrations?limit=50", "get.lua", "bench_list"),
    "patch": ("/api/v2/integrations/{one}", "patch.lua", "bench_owner"),
}
WARM_UP_SECONDS = 2
# Labels name log files too.
LABEL = re.compile(r"[A-Za-z0-9._-]+")


def variant(text):
    """LABEL=PATH[:VAR=VALUE,...] -> (label, path, env)."""
    label, sep, rest = text.partition("=")
    path, _, assignments = rest.partition(":")
    if not sep or not LABEL.fullmatch(label) or not path:
        raise argparse.ArgumentTypeError(
            f"expected LABEL=PATH[:VAR=VALUE,...], LABEL of letters, digits, . _ -: {text!r}")
    if not (Path(path) / "wsgi.py").is_file():
        raise argparse.ArgumentTypeError(f"{path!r} is not a checkout of the service (no wsgi.py)")
    env = dict(pair.split("=", 1) for pair in assignments.split(",") if pair)
    return label, Path(path).resolve(), env


def worker_cpu_seconds(server):
    """User and system CPU time of the gunicorn workers so far."""
    ticks = 0
    for pid in worker_pids(server):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class SqliteData:
    """One seeded instance folder; each run gets a copy."""

    def __init__(self, base, tmp):
        self.base, self.tmp = base, Path(tmp)
        seeded = dict(base, POTPIE_INSTANCE_PATH=str(self.tmp / "seeded"))
        self.keys = seeded_keys(seeded)

    def env_for_run(self):
        """The environment of one run's server, and what discards its data afterwards."""
        copy = self.tmp / f"run-{uuid.uuid4().hex[:8]}"
        shutil.copytree(self.tmp / "seeded", copy)
        return dict(self.base, POTPIE_INSTANCE_PATH=str(copy)), lambda: shutil.rmtree(copy)


class PostgresqlData:
    """One seeded database; each run gets a database made from it as a template."""

    def __init__(self, base, tmp, url):
        self.url, self.names = url, []
        self.tmp = Path(tmp)
        self.admin, self.run = run_admin(url, "turns")
        self.created = itertools.count(1)
        self.base = postgresql_env(base, tmp)
        try:
            self.seeded = self._create("")
            self.keys = seeded_keys(dict(self.base, DATABASE_URL=database_url(url, self.seeded)))
        except BaseException:
            self.close()
            raise

    def _create(self, template):
        name = f"{self.run}_{next(self.created)}"
        copy_of = f' TEMPLATE "{template}"' if template else ""
        with self.admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"{copy_of}')
        self.names.append(name)
        return name

    def _drop(self, name):
        with self.admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.names.remove(name)

    def env_for_run(self):
        """The environment of one run's server, and what discards its data afterwards."""
        name = self._create(self.seeded)
        return dict(self.base, DATABASE_URL=database_url(self.url, name)), lambda: self._drop(name)

    def close(self):
        """Drop every database this run created."""
        for name in list(self.names):
            self._drop(name)
        self.admin.close()


def start(label, env, root, app, tmp):
    """The variant's server, logging to /dev/null as bench/run.py's do; when it fails, why."""
    try:
        return Gunicorn(env, workers=None, root=root, app=app)
    except RuntimeError as exc:
        log = tmp / f"{label}.log"
        try:  # once more with a log, to show why (a failed start fails the same way)
            Gunicorn(env, workers=None, root=root, app=app, log_path=log).stop()
        except RuntimeError:
            pass
        raise SystemExit(f"{label}: {exc}; its log ends:\n{log.read_text()[-2000:]}") from None


def one_run(label, root, extra, data, args):
    """Start the variant on a fresh copy of the data, run the scenario between two /healthz."""
    env, discard = data.env_for_run()
    env.update(extra)
    app = "bench.ablation:app" if extra.get("ABLATE") else "wsgi:app"
    try:
        with start(label, env, root, app, data.tmp) as server:
            path, script, owner = SCENARIOS[args.scenario]
            key = data.keys[owner]
            if "{one}" in path:
                _, body, _ = server.request(
                    "POST", "/api/v2/integrations/save",
                    {"name": f"turns {uuid.uuid4()}", "integration_type": "jira",
                     "auth_data": {"access_token": "turns-token"}}, key)
                path = path.format(one=body["data"]["integration_id"])

            def lua_env():  # a run of its own per wrk run: save-create's names stay unique
                return {"POTPIE_KEY": key, "POTPIE_RUN": uuid.uuid4().hex[:8]}

            wrk(server.url + path, script, WARM_UP_SECONDS, args.connections, lua_env())
            wrk(server.url + "/healthz", None, WARM_UP_SECONDS, args.connections, lua_env())
            before = wrk(server.url + "/healthz", None, args.duration, args.connections, lua_env())
            cpu = worker_cpu_seconds(server)
            result = wrk(server.url + path, script, args.duration, args.connections, lua_env())
            cpu = worker_cpu_seconds(server) - cpu
            after = wrk(server.url + "/healthz", None, args.duration, args.connections, lua_env())
    finally:
        discard()
    ratio = result["rps"] / ((before["rps"] + after["rps"]) / 2)
    cpu_us = cpu / max(result["count"], 1) * 1e6
    print(f"{label}: {args.scenario} ratio {ratio:.3f}, {result['rps']:.0f} req/s, "
          f"p99 {result['p99']:.1f} ms, /healthz {before['rps']:.0f}, {after['rps']:.0f}, "
          f"worker CPU {cpu_us:.0f} us a request, non-2xx {result['non2xx']}", flush=True)
    return ratio, result["p99"], cpu_us, result["non2xx"]


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main():
    """Parse the variants, seed the data once, run the rounds, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", type=variant, metavar="LABEL=PATH[:VAR=VALUE,...]")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="create")
    parser.add_argument("--rounds", type=positive, default=3)
    parser.add_argument("--duration", type=positive, default=10)
    parser.add_argument("--connections", type=positive, default=32)
    parser.add_argument("--pg", help="PostgreSQL server URL (databases are created and dropped)")
    args = parser.parse_args()
    if len({label for label, _, _ in args.variants}) != len(args.variants):
        parser.error("variant labels must differ")
    if args.scenario != "create" and any("ABLATE" in env for _, _, env in args.variants):
        parser.error("ABLATE takes save-create apart: use it with --scenario create")
    ensure_wrk()
    base = base_env()
    with tempfile.TemporaryDirectory(prefix="potpie-turns-") as tmp:
        data = PostgresqlData(base, tmp, args.pg) if args.pg else SqliteData(base, tmp)
        try:
            runs = {label: [] for label, _, _ in args.variants}
            for _ in range(args.rounds):
                for label, root, extra in args.variants:
                    runs[label].append(one_run(label, root, extra, data, args))
        finally:
            if args.pg:
                data.close()
    print(f"\n{args.scenario} on {'PostgreSQL' if args.pg else 'SQLite'}, {args.rounds} round(s) "
          f"of {args.duration} s, {args.connections} connections")
    print("| variant | mean ratio | ratios | p99 ms | worker CPU us a request | non-2xx |")
    print("|---|---|---|---|---|---|")
    for label, results in runs.items():
        ratios, p99s, cpus, failures = zip(*results)
        print(f"| {label} | {sum(ratios) / len(ratios):.3f} | "
              f"{', '.join(f'{r:.3f}' for r in ratios)} | "
              f"{', '.join(f'{p:.1f}' for p in p99s)} | {sum(cpus) / len(cpus):.0f} | "
              f"{sum(failures)} |")


if __name__ == "__main__":
    main()
