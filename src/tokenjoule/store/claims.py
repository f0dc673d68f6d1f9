"""Cell claims: two sweeps (or a sweep and a measure) on one store split the work, never double it.

A process claims a cell's key before measuring it and releases it after the row is written.
A claim is one row in `claims` (key, owner pid + host, start and heartbeat times), taken in a
`BEGIN IMMEDIATE` transaction, so of two processes racing for one key exactly one wins.
A claim is stale, and may be taken over, when its owner is a process on this host that no
longer exists (killed with -9, crashed) or when its heartbeat is older than CLAIM_STALE_S
(an owner on another host that vanished).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time

CLAIM_STALE_S = 6 * 3600.0  # no heartbeat for this long: the owner is gone

CLAIMS_SQL = """
    CREATE TABLE IF NOT EXISTS claims (
        spec_hash TEXT PRIMARY KEY,
        owner_pid INTEGER NOT NULL,
        owner_host TEXT NOT NULL,
        started_at REAL NOT NULL,      -- unix time the claim was taken
        heartbeat_at REAL NOT NULL     -- unix time the owner last said it is alive
    )
"""


def owner() -> tuple[int, str]:
    return os.getpid(), socket.gethostname()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # exists but belongs to someone else (or cannot be asked): assume alive
    return True


def is_stale(row: sqlite3.Row | tuple, now: float | None = None) -> bool:
    pid, host, heartbeat = row[0], row[1], row[2]
    now = time.time() if now is None else now
    if now - float(heartbeat) > CLAIM_STALE_S:
        return True
    if host == socket.gethostname() and int(pid) != os.getpid():
        return not _alive(int(pid))
    return False


def try_claim(conn: sqlite3.Connection, spec_hash: str) -> bool:
    """Inside the caller's IMMEDIATE transaction: take `spec_hash` unless a live owner holds it."""
    pid, host = owner()
    now = time.time()
    row = conn.execute("SELECT owner_pid, owner_host, heartbeat_at FROM claims WHERE spec_hash = ?",
                       (spec_hash,)).fetchone()
    if row is not None and (row[0], row[1]) != (pid, host) and not is_stale(row, now):
        return False
    conn.execute("INSERT OR REPLACE INTO claims (spec_hash, owner_pid, owner_host, started_at, heartbeat_at)"
                 " VALUES (?, ?, ?, ?, ?)", (spec_hash, pid, host, now, now))
    return True


def release(conn: sqlite3.Connection, spec_hash: str) -> None:
    pid, host = owner()
    conn.execute("DELETE FROM claims WHERE spec_hash = ? AND owner_pid = ? AND owner_host = ?",
                 (spec_hash, pid, host))


def heartbeat(conn: sqlite3.Connection, spec_hash: str) -> None:
    pid, host = owner()
    conn.execute("UPDATE claims SET heartbeat_at = ? WHERE spec_hash = ? AND owner_pid = ? AND owner_host = ?",
                 (time.time(), spec_hash, pid, host))
