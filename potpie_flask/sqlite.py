"""SQLite with writers queued on a lock file: the embedded default database."""
import contextlib
import fcntl
import logging
import os
import signal
import threading
import time

import peewee

log = logging.getLogger("potpie_flask")

# Polling the lock file (outside the main thread): first wait, and the longest (SQLite's own
# loop waits 1, 2, 5... ms).
_FIRST_WAIT = 0.00005
_LONGEST_WAIT = 0.001
# A WAL frame: a page (SQLite's default 4 KiB, which this service never changes) and its header.
_FRAME_BYTES = 4096 + 24


def _lock_file_of(database, suffix):
    """The lock file `<database><suffix>`, open for reading and writing (as NFS's flock wants).

    Created for its owner alone, and, by root (`sudo flask db upgrade`), given the database
    file's owner, as SQLite gives its WAL: or the service could never open it again. A
    lock file that cannot be opened makes the database unavailable (a 503, one CLI line).
    """
    path = database + suffix
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise peewee.OperationalError(f"cannot open {path}: {exc.strerror}") from None
    if os.geteuid() == 0:
        try:
            owner = os.stat(database)
            os.fchown(fd, owner.st_uid, owner.st_gid)
        except OSError:
            pass  # no database file yet: the lock file is root's, as the database will be
    return os.fdopen(fd, "r+b", buffering=0)


def _create_private_database(path):
    """Create the database file for its owner alone, unless it exists; its WAL takes its mode.

    Created by sqlite3 with the umask's usual 0644, the file and its WAL were readable by
    every local user: names, audit entries and key hashes (the tokens are encrypted).
    """
    try:
        # Never once the file exists: closing a descriptor of it would drop every POSIX lock
        # this process's connections hold on it (below, _sync_database_file).
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError:
        pass  # it exists, or cannot be created: the first connection says why in its own words


class _Writer(threading.local):
    """A thread's lock file (opened in process `pid`) and its commits."""

    file = pid = None
    commits = 0


class _Checkpoints:
    """A daemon thread of each process that checkpoints the WAL when a commit asks."""

    def __init__(self, database):
        self._database = database
        self._starting = threading.Lock()
        self._due = self._pid = None

    def ask(self):
        """Wake this process's checkpoint thread, started first if the process has none."""
        if self._pid != os.getpid():
            with self._starting:
                # A forked child has none of its parent's threads: it starts its own.
                if self._pid != os.getpid():
                    due = threading.Event()
                    try:
                        threading.Thread(target=self._run, args=(due,), daemon=True,
                                         name="potpie-sqlite-checkpoints").start()
                    except RuntimeError as exc:
                        # Asked after a commit that stands: the next ask tries again.
                        log.warning("WAL checkpoint thread did not start: %s", exc)
                        return
                    self._due, self._pid = due, os.getpid()
        self._due.set()

    def _run(self, due):
        # A writer's alarm (_lock_within) must interrupt the writer's wait, not this thread.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        while True:
            due.wait()
            due.clear()
            try:
                self._database.checkpoint_wal()
            except Exception:  # the thread must outlive any one checkpoint
                log.exception("WAL checkpoint failed")


class QueuedWritersSqlite(peewee.SqliteDatabase):
    """SQLite whose writers wait for each other on a lock file, not in SQLite's busy loop.

    A writer that finds SQLite locked sleeps and retries after 1, 2, 5, 10... ms, so
    gunicorn workers saving at once lose more time per collision than the transaction
    they wait for takes. Every transaction here first takes an exclusive flock on
    `<database>-writers.lock`, given up after the busy timeout (OperationalError, a
    503). The main thread (a gunicorn sync worker's) blocks on it, its wait ended by an
    alarm at the timeout; other threads, or a process that uses SIGALRM itself, poll it
    from 50 µs up to every 1 ms. A killed holder's lock is released by the kernel.
    SQLite's busy timeout also still bounds the wait for anyone else holding SQLite's own
    lock (the sqlite3 shell, a backup).

    SQLite would checkpoint the WAL inside the COMMIT that crosses its threshold,
    with the lock file still held, stalling every writer for the checkpoint's fsyncs.
    Connections are opened with automatic checkpoints off instead, and every
    CHECKPOINT_EVERY commits of a thread wake its process's checkpoint thread, which
    runs a PASSIVE checkpoint on a connection of its own: one blocks neither readers
    nor writers, and the request that asked answers without waiting for its fsyncs
    (10-35 ms under sustained saves). Such a checkpoint never catches up with writers
    that do not pause, though, and SQLite starts the WAL over only once a checkpoint
    has copied all of it: under sustained saves the WAL grew by about 100 MB a second.
    So when a checkpoint finds the WAL longer than LOCKED_CHECKPOINT_AFTER_FRAMES, the
    thread copies what was appended meanwhile with one more, and the process's next
    commit runs one last checkpoint before it releases the lock file: with no writer
    appending it copies the whole WAL and the next write starts it over, unless a reader
    still holds an older snapshot or still reads from the WAL (then a later checkpoint
    tries again). Writers wait for that one, so it runs once per many thousand frames,
    and on the committing thread, which holds the GIL already: on the checkpoint thread,
    waiting for the GIL with the lock file held stalled every writer for 2-16 ms. Before
    it asks for that pass, the thread syncs the database file through a descriptor of its
    own (below), so that the pass is left with little to sync.

    The thread can fall behind: woken late, or its fsyncs slowed by other writes to the
    same disk (the tests' writers, with a 200-frame threshold, grew the WAL to at most
    8 MB alone and to 25 MB beside a `dd`). So the WAL also has a hard limit, twice that
    length. Every WAL_SIZE_EVERY commits a thread reads the WAL file's size, which is the
    longest the WAL has been since it was last emptied (a WAL that starts over is written
    again from its start, not shrunk). Past the limit, it takes the lock file again and
    empties the WAL with a TRUNCATE checkpoint, waiting for any other checkpoint and
    reader while every other writer waits for it. Shrinking the file whenever the WAL
    starts over (`journal_size_limit`), so that its size were its length, cost about 120
    µs of worker CPU a create: the file then grows again, and growing it costs the kernel.
    """

    CHECKPOINT_EVERY = 200
    # The length past which a checkpoint ends holding the lock file, so that the WAL can
    # start over (SQLite's own automatic checkpoint threshold is 1,000 frames); the hard
    # limit is twice it. Each such pass stalls every writer while it syncs: 23-33 ms until
    # the thread synced the database file first (at 20,000 frames, about 2,000 creates,
    # those stalls reached 1-2% of the saves and set save-create's p99), 2.2-7.7 ms since.
    # 10,000 frames measured no different since then (bench/NOTES.md), but would halve the
    # hard limit too. The WAL grows to about 180 MB under sustained saves, and a commit
    # that finds it past 330 MB empties it.
    LOCKED_CHECKPOINT_AFTER_FRAMES = 40000
    # Commits of a thread between two reads of the WAL's size, with the lock file released.
    # Read after every commit, under the lock, it cost three processes saving at once 6% of
    # their saves a second; outside it, 5% (about 20 µs of CPU a save, where one stat
    # alone takes 2): 20 commits of each worker add about 2 MB to the limit.
    WAL_SIZE_EVERY = 20

    def __init__(self, database, pragmas=(), timeout=5, **kwargs):
        self.wal_limit_bytes = 2 * self.LOCKED_CHECKPOINT_AFTER_FRAMES * _FRAME_BYTES
        _create_private_database(database)
        pragmas = [*dict(pragmas).items(), ("wal_autocheckpoint", 0)]
        super().__init__(database, pragmas=pragmas, timeout=timeout, **kwargs)
        self._lock_timeout = timeout
        self._lock_files = _Writer()
        self._checkpoints = _Checkpoints(self)
        # Set by the checkpoint thread when the WAL should start over: the next commit of
        # the process copies the rest of it before it releases the lock file.
        self._restart_due = False
        self._sync_fd = None
        # With synchronous=OFF SQLite syncs nothing, so neither does the checkpoint thread.
        self._synchronous = str(dict(pragmas).get("synchronous", "")).upper() not in ("OFF", "0")

    def _lock_file(self):
        # One open file per thread and process: flock excludes open files, not processes,
        # and a forked child must not share its parent's. Closed when its thread ends.
        held = self._lock_files
        if held.pid != os.getpid():
            held.file = _lock_file_of(self.database, "-writers.lock")
            held.pid = os.getpid()
        return held.file

    def _poll(self, attempt):
        """Call `attempt` until it returns something true; that, or None at the busy timeout."""
        deadline = time.monotonic() + self._lock_timeout
        wait = _FIRST_WAIT
        while not (done := attempt()):
            if time.monotonic() >= deadline:
                return None
            time.sleep(wait)
            wait = min(wait * 2, _LONGEST_WAIT)
        return done

    def _acquire(self):
        lock_file = self._lock_file()

        def lock():
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        if lock():
            return
        if self._lock_timeout > 0 and _alarm_is_free():
            taken = _lock_within(lock_file, self._lock_timeout)
        else:
            taken = self._poll(lock)
        if not taken:
            raise peewee.OperationalError("database is locked")

    @contextlib.contextmanager
    def one_upgrade_at_a_time(self):
        """Within it, no other schema upgrade of this database runs: another waits, however long.

        Every SQLite worker upgrades the schema as it starts; one that found another's upgrade
        holding the writers' lock past the busy timeout (an index rebuilt on a large table)
        failed to boot, which stops gunicorn's master. Upgrades queue on a lock file of their
        own, `<database>-upgrade.lock`, and only then take the writers' lock within the busy
        timeout, as any writer does: what holds that one is a request's write, or a
        transaction left open (in `flask shell`), which fails the upgrade loudly rather than
        hangs it.
        """
        with _lock_file_of(self.database, "-upgrade.lock") as lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("waiting for another schema upgrade to finish")
                fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def _release(self):
        fcntl.flock(self._lock_file(), fcntl.LOCK_UN)

    def begin(self, lock_type=None):
        self._acquire()
        try:
            super().begin(lock_type)
        except BaseException:
            self._release()
            raise

    def commit_together(self, bounds):
        """Run bound writes as a transaction of their own: BEGIN, the writes, COMMIT.

        What `atomic()` does for them, without Peewee's transaction objects and their
        stack: those cost a save-create about 5% of its instructions (callgrind). Peewee
        never sees this transaction open (`in_transaction()` stays False), so it ends it
        itself, on every path.
        """
        self.begin()
        try:
            for sql, params in bounds:
                self.execute_sql(sql, params)
            self.commit()
        except BaseException:
            # As atomic() does: after a failed write or COMMIT, which also releases the lock.
            self.rollback()
            raise

    def commit(self):
        # Released only once committed: a failed COMMIT is followed by rollback(), which
        # releases, so no other writer starts while this transaction is still open.
        super().commit()
        try:
            if self._restart_due:
                # No writer can append while this thread holds the lock file: this copies
                # the whole WAL, and the next write starts it over. When it could not run
                # (another process's checkpoint was running), the next commit tries again.
                self._restart_due = self._checkpoint() < 0
        finally:
            self._release()
        held = self._lock_files
        held.commits += 1
        if (held.commits % self.WAL_SIZE_EVERY == 0
                and self._wal_bytes() > self.wal_limit_bytes):
            self._empty_wal()
        if held.commits % self.CHECKPOINT_EVERY == 0:
            self._checkpoints.ask()

    def checkpoint_wal(self):
        """Copy the WAL into the database file; past its threshold, have it start over."""
        if self._checkpoint() > self.LOCKED_CHECKPOINT_AFTER_FRAMES:
            # What was appended meanwhile: the pass under the lock is left with little.
            self._checkpoint()
            # SQLite syncs the database file after a pass only when the pass copied the whole
            # WAL, which no pass does while writers append: the pages every pass copied stay
            # unsynced until the pass under the lock, which syncs them before the WAL may be
            # written over. Under sustained saves that sync took 20-30 ms of the pass, every
            # writer waiting; synced here first, off the lock, the pass took 2.2-7.7 ms.
            if self._synchronous:
                self._sync_database_file()
            self._restart_due = True

    def _sync_database_file(self):
        # Only time is at stake: the pass under the lock syncs the file whether or not this
        # did, so a failure is logged and the WAL starts over all the same. A database file
        # replaced while the service runs is not followed: syncing the old one costs time.
        try:
            if self._sync_fd is None:
                # Opened once and never closed: closing any descriptor of the file drops every
                # POSIX lock this process holds on it, those of its SQLite connections
                # included (fcntl locks belong to the process), and the database could be
                # corrupted.
                self._sync_fd = os.open(self.database, os.O_RDONLY | os.O_CLOEXEC)
            getattr(os, "fdatasync", os.fsync)(self._sync_fd)  # macOS has no fdatasync
        except OSError as exc:
            log.warning("database file sync before the WAL starts over failed: %s", exc)

    def _wal_bytes(self):
        try:
            return os.stat(self.database + "-wal").st_size
        except OSError:  # no WAL (yet): nothing to copy
            return 0

    def _empty_wal(self):
        """Copy all of the WAL and truncate it under the lock file: every writer waits."""
        try:
            self._acquire()
        except peewee.OperationalError as exc:
            # This thread's transaction is committed: a later commit tries again.
            log.warning("WAL checkpoint failed: %s", exc)
            return
        try:
            # Writers that committed meanwhile found it past the limit too: one empties it.
            if self._wal_bytes() > self.wal_limit_bytes:
                self._truncate_wal()
        finally:
            self._release()

    def _truncate_wal(self):
        log.warning("WAL past %d bytes: writers wait for a full checkpoint",
                    self.wal_limit_bytes)

        def truncate():
            row = self.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            blocked, frames, _ = row
            # SQLite waits (its busy timeout) for readers, but not for another process's
            # checkpoint: that one answers at once with no frames counted, and is polled.
            return row if not blocked or frames >= 0 else None

        try:
            row = self._poll(truncate)
        except peewee.PeeweeException as exc:
            log.warning("WAL checkpoint failed: %s", exc)
            return
        if row is None or row[0]:
            # A later commit tries again.
            log.warning("WAL checkpoint failed: still in use after the busy timeout")

    def _checkpoint(self):
        """A PASSIVE checkpoint: the WAL's length in frames, or -1 when it could not run."""
        try:
            return self.execute_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        except peewee.PeeweeException as exc:
            # Nothing is lost: the WAL holds every commit, and the next checkpoint copies it.
            log.warning("WAL checkpoint failed: %s", exc)
            return -1

    def rollback(self):
        try:
            super().rollback()
        finally:
            self._release()


class _AlarmRang(Exception):
    """SIGALRM ended a wait for the lock file."""


def _ring(signum, frame):
    raise _AlarmRang()


def _alarm_is_free():
    """True when this thread may end a blocking wait with SIGALRM: the main one, and nobody else's."""
    return (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGALRM) == signal.SIG_DFL)


def _lock_within(lock_file, timeout):
    """Block on the lock file for at most `timeout` seconds; True when this thread took it.

    The kernel wakes a blocked writer as soon as the lock is released, where a poller
    sleeps on: servers taking turns, SQLite's one-row PATCH 0.474 of /healthz against
    0.438 polled, save-create 0.437 against 0.421 (bench/NOTES.md). flock has no
    timeout, so an alarm ends the wait: Python runs signal handlers in the main thread
    only, and the process's other threads block SIGALRM (the checkpoint thread does).
    """
    try:
        signal.signal(signal.SIGALRM, _ring)
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            return True
        finally:
            _put_alarm_away()
    except _AlarmRang:
        # It may have rung after the lock was taken, or inside the `finally` above: the
        # lock is given back and the alarm put away again (it rings once, so this is the end).
        _put_alarm_away()
        fcntl.flock(lock_file, fcntl.LOCK_UN)
        return False


def _put_alarm_away():
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
