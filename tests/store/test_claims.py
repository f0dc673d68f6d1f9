"""Cell claims between real processes: a live owner's claim holds, a dead or silent one's is
stale and may be taken, and of several processes racing for one key exactly one wins."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from tokenjoule.store.claims import CLAIM_STALE_S
from tokenjoule.store.db import ResultStore

HOLDER = textwrap.dedent("""
    import sys, time
    from tokenjoule.store.db import ResultStore
    s = ResultStore(sys.argv[1])
    print("claimed" if s.claim(sys.argv[2]) else "refused", flush=True)
    time.sleep(60)
""")

RACER = textwrap.dedent("""
    import sys, time
    from tokenjoule.store.db import ResultStore
    s = ResultStore(sys.argv[1])
    while time.time() < float(sys.argv[3]):
        time.sleep(0.001)
    won = [k for k in sys.argv[2].split(",") if s.claim(k)]
    print(",".join(won), flush=True)
    time.sleep(1)
""")


def _holder(db, key) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), key], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "claimed"
    return proc


def test_live_claim_holds_and_a_killed_owner_is_stale(tmp_path):
    db = tmp_path / "r.db"
    ResultStore(db).close()
    proc = _holder(db, "cell-a")
    try:
        with ResultStore(db) as store:
            assert not store.claim("cell-a")  # held by a live process
            assert store.claim("cell-b")  # other keys are free
            assert store.claim("cell-b")  # re-entrant for its owner
            proc.kill()
            proc.wait(timeout=10)
            assert store.claim("cell-a")  # its owner is gone (kill -9): stale, taken over
            store.release("cell-a")
            assert [c["spec_hash"] for c in store.claims()] == ["cell-b"]
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_silent_owner_on_another_host_goes_stale(tmp_path):
    db = tmp_path / "r.db"
    with ResultStore(db) as store:
        old = time.time() - CLAIM_STALE_S - 60
        store._conn.execute("INSERT INTO claims VALUES ('k', 1, 'another-host', ?, ?)", (old, old))
        store._conn.execute("INSERT INTO claims VALUES ('fresh', 1, 'another-host', ?, ?)", (time.time(), time.time()))
        assert store.claim("k")
        assert not store.claim("fresh")


def test_racing_processes_split_the_keys_without_overlap(tmp_path):
    db = tmp_path / "r.db"
    ResultStore(db).close()
    keys = [f"k{i}" for i in range(30)]
    at = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(db), ",".join(keys), at], stdout=subprocess.PIPE,
                              text=True) for _ in range(3)]
    won = [p.communicate(timeout=60)[0].strip() for p in procs]
    taken = [k for w in won for k in w.split(",") if k]
    assert sorted(taken) == sorted(keys)  # every key claimed exactly once
