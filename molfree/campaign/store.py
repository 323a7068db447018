"""Campaign state and results in SQLite (WAL; one transaction per claimed or finished batch of jobs).

Only the processes that run a campaign (the Dask clients, on one host) touch the database;
workers write result files. A run *claims* a job (a lease with an owner and an expiry that the
run keeps renewing) before submitting it, so two runs of the same campaign at once never work on
the same job; a crashed run's leases expire and another run takes its jobs over. Each attempt
writes into its own folder, so finished results are never overwritten; a finished job whose files
are missing, changed (SHA-256, size) or unloadable is reset and recomputed. Table ``events`` logs
every claim, completion, failure and corruption with a timestamp.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .spec import JobSpec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY, type TEXT NOT NULL, grp TEXT NOT NULL, spec TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',          -- pending | running | done | failed
    attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
    computations INTEGER NOT NULL DEFAULT 0,         -- attempts that finished with valid results
    owner TEXT, lease_expires REAL, claimed REAL, finished REAL, error TEXT);
CREATE TABLE IF NOT EXISTS files (
    key TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (key, name));
CREATE TABLE IF NOT EXISTS events (time REAL NOT NULL, key TEXT, kind TEXT NOT NULL, detail TEXT);
CREATE TABLE IF NOT EXISTS analyses (grp TEXT PRIMARY KEY, result TEXT NOT NULL, time REAL NOT NULL);
"""


@dataclass(frozen=True)
class FileRecord:
    """A result file: path relative to the campaign directory, SHA-256 and size in bytes."""

    name: str
    path: str
    sha256: str
    size: int


def describe_file(directory: Path, name: str, path: Path) -> FileRecord:
    """Hash and size of a written result file."""
    data = path.read_bytes()
    return FileRecord(name, str(path.relative_to(directory)), hashlib.sha256(data).hexdigest(), len(data))


class Store:
    """The campaign database at ``path`` (created on first use); result paths are relative to its folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.directory = self.path.parent
        self.directory.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on error): one writer at a time."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _event(self, db: sqlite3.Connection, key: str | None, kind: str, detail: str = "") -> None:
        db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (time.time(), key, kind, detail))

    def register(self, specs: Iterable[JobSpec], max_attempts: int) -> None:
        """Add jobs not yet known (known jobs keep their state); update the retry limit."""
        specs = list(specs)
        with self.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO jobs (key, type, grp, spec, max_attempts) VALUES (?, ?, ?, ?, ?)",
                           [(spec.key, spec.type, spec.group, spec.to_json(), max_attempts) for spec in specs])
            db.executemany("UPDATE jobs SET max_attempts = ? WHERE key = ?", [(max_attempts, spec.key) for spec in specs])

    def verify(self, key: str, check: Callable[[Path], None]) -> bool:
        """True if the job is done and its files are intact; a done job with bad files goes back to pending."""
        row = self._db.execute("SELECT status FROM jobs WHERE key = ?", (key,)).fetchone()
        if row is None or row["status"] != "done":
            return False
        problem = None
        for record in self.files(key):
            path = self.directory / record.path
            if not path.is_file():
                problem = f"{record.path} missing"
            elif path.stat().st_size != record.size or describe_file(self.directory, record.name, path) != record:
                problem = f"{record.path} changed (size or SHA-256)"
            else:
                try:
                    check(path)
                except Exception as exc:  # noqa: BLE001 - any load failure means the file is unusable
                    problem = f"{record.path} unloadable: {exc}"
            if problem:
                break
        if problem is None:
            return True
        with self.transaction() as db:
            db.execute("UPDATE jobs SET status = 'pending', attempts = 0, error = ? WHERE key = ? AND status = 'done'",
                       (problem, key))
            db.execute("DELETE FROM files WHERE key = ?", (key,))
            self._event(db, key, "corrupt", problem)
        return False

    def claim(self, keys: list[str], owner: str, lease_seconds: float) -> tuple[dict[str, int], dict[str, str]]:
        """Lease jobs to ``owner`` in one transaction.

        Returns ``({key: attempt number}`` of the jobs claimed, ``{key: "done" | "failed"})`` of those
        finished for good (a job out of attempts is marked failed); jobs leased to another live run are
        in neither.
        """
        now = time.time()
        claimed, finished = {}, {}
        with self.transaction() as db:
            rows = db.execute(f"SELECT * FROM jobs WHERE key IN ({','.join('?' * len(keys))})", keys).fetchall()
            for row in rows:
                key = row["key"]
                if row["status"] == "running" and row["owner"] != owner and row["lease_expires"] > now:
                    continue
                if row["status"] in ("done", "failed"):
                    finished[key] = row["status"]
                elif row["attempts"] >= row["max_attempts"]:
                    db.execute("UPDATE jobs SET status = 'failed', owner = NULL, lease_expires = NULL WHERE key = ?",
                               (key,))
                    finished[key] = "failed"
                else:
                    claimed[key] = row["attempts"] + 1
            db.executemany("UPDATE jobs SET status = 'running', attempts = ?, owner = ?, lease_expires = ?, claimed = ? "
                           "WHERE key = ?", [(attempt, owner, now + lease_seconds, now, key)
                                             for key, attempt in claimed.items()])
            db.executemany("INSERT INTO events VALUES (?, ?, 'claim', ?)",
                           [(now, key, f"{owner} attempt {attempt}") for key, attempt in claimed.items()])
        return claimed, finished

    def renew(self, owner: str, lease_seconds: float) -> None:
        """Extend every lease held by ``owner``."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET lease_expires = ? WHERE owner = ? AND status = 'running'",
                       (time.time() + lease_seconds, owner))

    def settle(self, owner: str, outcomes: dict[str, list[FileRecord] | str]) -> dict[str, str]:
        """Record finished attempts of ``owner`` in one transaction: result files, or an error message.

        Returns per key ``"done"``, ``"retry"`` (failed, attempts left), ``"failed"`` (out of attempts) or
        ``"stale"`` (the job is no longer ``owner``'s: nothing changes).
        """
        now = time.time()
        states = {}
        with self.transaction() as db:
            for key, outcome in outcomes.items():
                row = db.execute("SELECT status, owner, attempts, max_attempts FROM jobs WHERE key = ?",
                                 (key,)).fetchone()
                if row["status"] != "running" or row["owner"] != owner:
                    states[key] = "stale"
                    self._event(db, key, "stale", owner)
                elif isinstance(outcome, str):
                    states[key] = "retry" if row["attempts"] < row["max_attempts"] else "failed"
                    db.execute("UPDATE jobs SET status = ?, error = ?, owner = NULL, lease_expires = NULL "
                               "WHERE key = ?", ("pending" if states[key] == "retry" else "failed", outcome, key))
                    self._event(db, key, "fail", outcome)
                else:
                    states[key] = "done"
                    db.execute("DELETE FROM files WHERE key = ?", (key,))
                    db.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?)",
                                   [(key, r.name, r.path, r.sha256, r.size) for r in outcome])
                    db.execute("UPDATE jobs SET status = 'done', finished = ?, computations = computations + 1, "
                               "error = NULL, owner = NULL, lease_expires = NULL WHERE key = ?", (now, key))
                    self._event(db, key, "done", owner)
        return states

    def release(self, owner: str) -> None:
        """Give back ``owner``'s leases (jobs it did not finish go back to pending, attempt not counted)."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET status = 'pending', attempts = attempts - 1, owner = NULL, "
                       "lease_expires = NULL WHERE owner = ? AND status = 'running'", (owner,))

    def reset_failed(self) -> None:
        """Give failed jobs a fresh set of attempts."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET status = 'pending', attempts = 0 WHERE status = 'failed'")

    def files(self, key: str) -> list[FileRecord]:
        rows = self._db.execute("SELECT name, path, sha256, size FROM files WHERE key = ?", (key,)).fetchall()
        return [FileRecord(*row) for row in rows]

    def jobs(self) -> list[sqlite3.Row]:
        return self._db.execute("SELECT * FROM jobs ORDER BY grp, key").fetchall()

    def job(self, key: str) -> sqlite3.Row:
        return self._db.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()

    def counts(self) -> dict[str, dict[str, int]]:
        """``{type: {status: count}}``."""
        counts: dict[str, dict[str, int]] = {}
        for row in self._db.execute("SELECT type, status, COUNT(*) AS n FROM jobs GROUP BY type, status"):
            counts.setdefault(row["type"], {})[row["status"]] = row["n"]
        return counts

    def events(self, kind: str | None = None) -> list[sqlite3.Row]:
        query, args = "SELECT * FROM events", ()
        if kind is not None:
            query, args = query + " WHERE kind = ?", (kind,)
        return self._db.execute(query + " ORDER BY time", args).fetchall()

    def save_analysis(self, group: str, result: dict) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO analyses VALUES (?, ?, ?)", (group, json.dumps(result), time.time()))

    def analyses(self) -> dict[str, dict]:
        return {row["grp"]: json.loads(row["result"])
                for row in self._db.execute("SELECT grp, result FROM analyses ORDER BY grp")}
