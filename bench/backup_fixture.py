#!/usr/bin/env python3
"""Grows a stopped Herald database to SUBJECTS subjects and MESSAGES messages for the backup
benchmark (bench/backup.sh), by cloning the one subject, subject key and message the script
created through the API. Clones differ in id (and a random phone index), so the rows are as
large as real ones; nothing decrypts them, and the benchmark does not need it to.

    backup_fixture.py sqlite PATH SUBJECTS MESSAGES
    backup_fixture.py postgres URL SUBJECTS MESSAGES
"""
import sqlite3
import subprocess
import sys

kind, target, subjects, messages = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])


def columns_sqlite(db, table):
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def psql(sql, capture=False):
    out = subprocess.run(["psql", target, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                         check=True, capture_output=True, text=True)
    return out.stdout


def columns_postgres(table):
    rows = psql("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                f"current_schema() AND table_name = '{table}' ORDER BY ordinal_position")
    return [r for r in rows.splitlines() if r]


def clone(table, columns, template_key, overrides, count, series):
    names = ", ".join(columns)
    exprs = ", ".join(overrides.get(c, f"t.{c}") for c in columns)
    return (f"INSERT INTO {table} ({names}) SELECT {exprs} FROM {table} t, {series(count)} "
            f"WHERE t.{template_key[0]} = '{template_key[1]}'")


if kind == "sqlite":
    db = sqlite3.connect(target)
    template_subject = db.execute("SELECT id FROM subjects LIMIT 1").fetchone()[0]
    template_message = db.execute("SELECT id FROM messages LIMIT 1").fetchone()[0]
    series = lambda n: (f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s "
                        f"WHERE i < {n}) SELECT i FROM s) n")
    sid = "printf('sub_%026d', n.i)"
    for sql in [
        clone("subjects", columns_sqlite(db, "subjects"), ("id", template_subject),
              {"id": sid, "phone_index": "randomblob(32)"}, subjects, series),
        clone("subject_keys", columns_sqlite(db, "subject_keys"), ("subject_id", template_subject),
              {"subject_id": sid}, subjects, series),
        clone("messages", columns_sqlite(db, "messages"), ("id", template_message),
              {"id": "printf('msg_%026d', n.i)",
               "subject_id": f"printf('sub_%026d', 1 + n.i % {subjects})"}, messages, series),
    ]:
        db.execute(sql)
    db.commit()
    db.close()
else:
    template_subject = psql("SELECT id FROM subjects LIMIT 1").strip()
    template_message = psql("SELECT id FROM messages LIMIT 1").strip()
    series = lambda n: f"generate_series(1, {n}) AS n(i)"
    sid = "'sub_' || lpad(n.i::text, 26, '0')"
    for sql in [
        clone("subjects", columns_postgres("subjects"), ("id", template_subject),
              {"id": sid, "phone_index": "decode(md5(random()::text) || md5(random()::text), 'hex')"},
              subjects, series),
        clone("subject_keys", columns_postgres("subject_keys"), ("subject_id", template_subject),
              {"subject_id": sid}, subjects, series),
        clone("messages", columns_postgres("messages"), ("id", template_message),
              {"id": "'msg_' || lpad(n.i::text, 26, '0')",
               "subject_id": f"'sub_' || lpad((1 + n.i % {subjects})::text, 26, '0')"},
              messages, series),
    ]:
        psql(sql)
    psql("VACUUM ANALYZE")
