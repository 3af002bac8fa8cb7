"""PostgreSQL databases of one run (a test session, a benchmark): dropped when it ends, and
by a later run on the same host when its process died before it could (a pytest-timeout
exit, a kill)."""
import hashlib
import os
import re
import socket
import uuid


def _host():
    """This host and boot: a process id means something only there."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot_id:
            boot = boot_id.read().strip()
    except OSError:
        boot = ""
    return hashlib.sha256(f"{socket.gethostname()} {boot}".encode()).hexdigest()[:8]


def run_database_name(kind):
    """A database name of this process's run: potpie_<kind>_<host>_<pid>_<random>."""
    return f"potpie_{kind}_{_host()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def drop_abandoned(cursor, kind):
    """Drop the `kind` databases whose run, on this host, has no process left; their names."""
    prefix = f"potpie_{kind}_{_host()}_"
    cursor.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,))
    dropped = []
    for (name,) in cursor.fetchall():
        named = re.fullmatch(r"(\d+)_[0-9a-f]{8}", name[len(prefix):])
        if named and not _running(int(named.group(1))):
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            dropped.append(name)
    return sorted(dropped)


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
