"""The embedded default under concurrent writers: gunicorn on SQLite, eight clients ingesting at once.

Writers must queue for SQLite's one write lock (WAL, a busy timeout longer than a batch, BEGIN
IMMEDIATE; see apm_platform/settings.py) instead of being refused with 503 "database is locked".
"""

import json
import os
import sqlite3
import tempfile
import threading
import time

from django.test import SimpleTestCase

from observability.tests.live import Gunicorn, manage, server_key_headers
from observability.tests.utils import INGEST_URL, make_events

CLIENTS = 8
BATCHES = int(os.environ.get("APM_WRITERS_BATCHES", "10"))
EVENTS_PER_BATCH = 1_000


def concurrent_ingest(server: Gunicorn, headers: dict, *, clients: int, batches: int, size: int) -> dict:
    """`clients` threads, each posting `batches` batches of `size` events on its own keep-alive
    connection: the statuses answered, the events acknowledged and the seconds it took."""
    bodies = [json.dumps(make_events(size, seed=n)).encode() for n in range(clients)]
    statuses: list[int] = []
    acknowledged = [0]
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(n: int) -> None:
        conn = server.connection(timeout=120)
        start.wait()
        try:
            for _ in range(batches):
                conn.request("POST", INGEST_URL, body=bodies[n],
                             headers={**headers, "Content-Type": "application/json"})
                response = conn.getresponse()
                body = response.read()
                with lock:
                    statuses.append(response.status)
                    if response.status < 300:
                        acknowledged[0] += json.loads(body)["inserted"]
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    return {"statuses": statuses, "acknowledged": acknowledged[0], "seconds": time.monotonic() - began}


class ConcurrentSqliteWritersTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.TemporaryDirectory()
        cls.path = f"{cls.tmp.name}/writers.sqlite3"
        # Its own SQLite file, whatever the suite runs on: the question is SQLite's locking.
        cls.env = {"DATABASE_URL": f"sqlite:///{cls.path}", "APM_TIMESCALE": "auto",
                   "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "writers-test-" + "x" * 50,
                   "DJANGO_ALLOWED_HOSTS": "127.0.0.1", "DJANGO_STATIC_ROOT": f"{cls.tmp.name}/static"}
        manage("migrate", "--noinput", env=cls.env)
        cls.auth = server_key_headers(cls.env, "ingest")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        super().tearDownClass()

    def stored(self) -> int:
        with sqlite3.connect(self.path) as db:
            return db.execute("SELECT count(*) FROM observability_apirequest").fetchone()[0]

    def test_eight_clients_ingesting_at_once_are_all_served_and_every_event_is_stored(self):
        before = self.stored()
        # The shipped shape on 2 cores: 5 workers x 8 threads (gunicorn.conf.py), so up to
        # eight requests write at the same moment from five processes.
        with Gunicorn(self.env, workers=5) as server:
            run = concurrent_ingest(server, self.auth, clients=CLIENTS, batches=BATCHES, size=EVENTS_PER_BATCH)
        sent = CLIENTS * BATCHES * EVENTS_PER_BATCH
        if os.environ.get("APM_WRITERS_REPORT"):  # the figure in docs/PERFORMANCE.md
            print(f"\n{CLIENTS} clients x {BATCHES} batches x {EVENTS_PER_BATCH:,} events: {sent:,} in "
                  f"{run['seconds']:.1f} s = {sent / run['seconds']:,.0f} events/s, {len(run['statuses'])} answers")
        refused = [s for s in run["statuses"] if s >= 300]
        self.assertEqual(refused, [], f"{len(refused)} of {len(run['statuses'])} batches refused")
        self.assertEqual(run["acknowledged"], sent)
        self.assertEqual(self.stored() - before, sent)

    def test_a_write_waits_for_the_lock_longer_than_sqlites_default_5_seconds(self):
        # Another writer (a seed, a prune, a long batch) holds the write lock for 6 s.
        with Gunicorn(self.env) as server:
            holder = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            holder.execute("BEGIN IMMEDIATE")
            releaser = threading.Timer(6.0, holder.execute, args=("COMMIT",))
            releaser.start()
            began = time.monotonic()
            try:
                status, _, body = server.request("POST", INGEST_URL, json.dumps(make_events(10)),
                                                 {**self.auth, "Content-Type": "application/json"})
            finally:
                releaser.join()
                holder.close()
        self.assertEqual(status, 200, body)
        self.assertGreater(time.monotonic() - began, 5.5)

    def test_the_database_is_in_wal_mode_so_readers_do_not_wait_for_the_writer(self):
        with sqlite3.connect(self.path) as db:
            self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
