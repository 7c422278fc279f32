#!/usr/bin/env python3
"""The reference for the SQLite import figure: Python's sqlite3 with batched
upserts into rundbrief's own schema, the way issue 4 describes its reference
("Python's sqlite3 with batched upserts into the same schema").

    sqlite_upserts.py [--no-audit] DB CSV LIST_ID [BATCH]

DB is a database migrated by rundbrief with the list already created (the
bench does both). Per batch of BATCH rows (default 1000), in one transaction,
with the pragmas rundbrief sets (WAL, synchronous=NORMAL, 32 MiB cache,
wal_autocheckpoint 8192): `executemany` of an upsert into `subscribers` (on
`email_key`), an upsert into `memberships` and an insert into `audit` (one
entry per row, as every state change is audited; left out with --no-audit,
which is what the issue's psql reference writes), the subscriber id looked up
by its key inside the statements. Foreign keys are off (Python's default; the
importer also switches them off for its batches). The address is only
trimmed and its domain lower-cased: no validation, no IDNA, no merging of
duplicate rows within a batch, which the importer does. Prints one JSON line:
{"rows": N, "seconds": S, "rows_per_s": R}.
"""

import csv
import json
import os
import sqlite3
import sys
import time
from datetime import datetime, timezone


def uuid7_bytes(ms: int) -> bytes:
    """A UUID v7 as 16 bytes (time-ordered like the importer's ids)."""
    rand = bytearray(os.urandom(10))
    rand[0] = (rand[0] & 0x0F) | 0x70
    rand[2] = (rand[2] & 0x3F) | 0x80
    return ms.to_bytes(6, "big") + bytes(rand)


def main() -> None:
    args = sys.argv[1:]
    with_audit = "--no-audit" not in args
    args = [a for a in args if a != "--no-audit"]
    db_path, csv_path, list_hex = args[:3]
    batch = int(args[3]) if len(args) > 3 else 1000
    list_id = bytes.fromhex(list_hex.replace("-", ""))
    db = sqlite3.connect(db_path, isolation_level=None)
    for pragma in (
        "journal_mode = WAL",
        "synchronous = NORMAL",
        "cache_size = -32768",
        "wal_autocheckpoint = 8192",
        "foreign_keys = OFF",
    ):
        db.execute(f"PRAGMA {pragma}")
    upsert_sub = (
        "INSERT INTO subscribers (id, email, email_key, name, attributes, status,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'active', ?, ?)"
        " ON CONFLICT (email_key) DO UPDATE SET name = excluded.name,"
        " attributes = excluded.attributes, updated_at = excluded.updated_at"
    )
    upsert_member = (
        "INSERT INTO memberships (subscriber_id, list_id, status, created_at, updated_at)"
        " SELECT id, ?, 'subscribed', ?, ? FROM subscribers WHERE email_key = ?"
        " ON CONFLICT (subscriber_id, list_id) DO UPDATE SET updated_at = excluded.updated_at"
    )
    insert_audit = (
        "INSERT INTO audit (id, subscriber_id, list_id, action, actor, reason, created_at)"
        " SELECT ?, id, ?, 'created', 'import', ?, ? FROM subscribers WHERE email_key = ?"
    )
    reason = f"import: {os.path.basename(csv_path)}:"
    start = time.perf_counter()
    rows = 0
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader)
        extra = header[2:]
        pending = []

        def flush() -> None:
            now = datetime.now(timezone.utc).isoformat()
            ms = int(time.time() * 1000)
            subs, members, audits = [], [], []
            for line, (email, name, attrs) in pending:
                local, _, domain = email.strip().rpartition("@")
                email = f"{local}@{domain.lower()}"
                key = email.lower()
                subs.append((uuid7_bytes(ms), email, key, name, attrs, now, now))
                members.append((list_id, now, now, key))
                audits.append((uuid7_bytes(ms), list_id, f"{reason}{line}", now, key))
            db.execute("BEGIN IMMEDIATE")
            db.executemany(upsert_sub, subs)
            db.executemany(upsert_member, members)
            if with_audit:
                db.executemany(insert_audit, audits)
            db.execute("COMMIT")
            pending.clear()

        for line, rec in enumerate(reader, start=2):
            attrs = json.dumps(dict(zip(extra, rec[2:])), ensure_ascii=False)
            pending.append((line, (rec[0], rec[1] or None, attrs)))
            rows += 1
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
    seconds = time.perf_counter() - start
    print(json.dumps({"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds)}))


if __name__ == "__main__":
    main()
