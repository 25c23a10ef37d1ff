#!/usr/bin/env python3
"""PyMySQL through the switchyard router against PyMySQL directly on the leader.

Usage: types_roundtrip.py ROUTER_PORT LEADER_PORT DATABASE

Runs the same statements both ways and compares rows, cursor descriptions, column flags,
row counts, insert ids, warnings and errors. `tests/router_pymysql.rs` creates the database
(tables `types`, `many_router`, `many_direct`, `tx`, procedure `two_sets`, database
`pyother`) and runs this script. Prints every difference and exits 1 on a mismatch; on
success the last line is `pymysql: N checks passed`.
"""

import datetime
import decimal
import sys

try:
    import pymysql
except ImportError:
    print(
        "PyMySQL is missing: python3 -m pip install PyMySQL (or run scripts/install-deps)",
        file=sys.stderr,
    )
    sys.exit(2)

ROUTER_PORT, LEADER_PORT, DB = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

failures = []
checks = 0


def connect(port, **kw):
    return pymysql.connect(
        host="127.0.0.1",
        port=port,
        user="app",
        password="app",
        database=DB,
        charset="utf8mb4",
        **kw,
    )


def short(value):
    text = repr(value)
    return text if len(text) <= 300 else f"{text[:300]}... ({len(text)} chars)"


def same(what, via_router, direct):
    """The router's answer equals the leader's."""
    global checks
    checks += 1
    if via_router != direct:
        failures.append(f"{what}:\n  router: {short(via_router)}\n  direct: {short(direct)}")


def expect(what, got, want):
    """An answer is the expected one (not merely the same wrong one both ways)."""
    global checks
    checks += 1
    if got != want:
        failures.append(f"{what}:\n  got:      {short(got)}\n  expected: {short(want)}")


def fields(cur):
    """Everything of the column definitions: description plus flags and character set."""
    return [
        (f.name, f.org_name, f.table_name, f.org_table, f.db, f.type_code, f.flags,
         f.charsetnr, f.length, f.scale)
        for f in cur._result.fields
    ] if cur._result and getattr(cur._result, "fields", None) else []


def outcome(conn, sql, params=None):
    """Rows, description, column definitions, row count, insert id, warnings, or the error."""
    with conn.cursor() as cur:
        try:
            cur.execute(sql, params)
        except pymysql.err.MySQLError as e:
            return ("error", type(e).__name__, e.args)
        return (
            cur.fetchall(),
            cur.description,
            fields(cur),
            cur.rowcount,
            cur.lastrowid,
            cur.warning_count,
        )


def both(what, sql, params=None):
    """Runs one statement both ways and compares everything; returns the router's outcome."""
    r = outcome(router, sql, params)
    d = outcome(direct, sql, params)
    if r[0] != "error" and d[0] != "error" and len(r[0]) == len(d[0]):
        # Row by row first, so that a difference names its row.
        for i, (rr, dr) in enumerate(zip(r[0], d[0])):
            same(f"{what}: row {i}", rr, dr)
        same(f"{what}: description", r[1], d[1])
        same(f"{what}: column definitions", r[2], d[2])
        same(f"{what}: rowcount, lastrowid, warnings", r[3:], d[3:])
    else:
        same(what, r, d)
    return r


# Autocommit on (PyMySQL's default is off): each statement on its own, so that the router
# may run them on any pooled connection; the transactions section turns it off.
router = connect(ROUTER_PORT, autocommit=True)
direct = connect(LEADER_PORT, autocommit=True)

# Every column type, NULLs, and values of 1 MB and 17 MB (more than one packet).
r = both("SELECT * FROM types", "SELECT * FROM types ORDER BY id")
rows = r[0]
expect("rows in types", len(rows), 5)
expect("columns in types", len(r[1]), 35)
if len(rows) == 5:
    by_name = dict(zip((d[0] for d in r[1]), rows[0]))
    expect("TINYINT", by_name["ti"], -5)
    expect("BIGINT UNSIGNED", by_name["biu"], 2**64 - 1)
    expect("DECIMAL", by_name["de"], decimal.Decimal("12345678901234.123456"))
    expect("DATETIME(6)", by_name["dtm"], datetime.datetime(2023, 12, 31, 23, 59, 58, 123456))
    expect("TIME(6)", by_name["tm"], datetime.timedelta(hours=12, minutes=34, seconds=56,
                                                        microseconds=789012))
    expect("VARCHAR utf8mb4", by_name["vc"], "héllo wörld — 日本語 🎉🦀")
    expect("JSON", by_name["j"], '{"a": [1, 2.5, "ü"], "emoji": "🚀"}')
    expect("NULL row", all(v is None for v in rows[2][1:]), True)
    big = dict(zip((d[0] for d in r[1]), rows[3]))
    expect("1 MB MEDIUMBLOB", len(big["mb"] or b""), 1 << 20)
    expect("17 MB LONGBLOB", len(big["lb"] or b""), (17 << 20) + 5)
    expect("17 MB LONGBLOB content", (big["lb"] or b"")[:4], b"\x00\x01\x02\x03")

# Parameters of every common Python type.
params = (
    42,
    -7.25,
    "ünïcödé 🎉",
    None,
    b"\x00\x01\xff",
    decimal.Decimal("-12.345"),
    datetime.datetime(2024, 2, 29, 1, 2, 3, 456789),
    datetime.date(1999, 12, 31),
    datetime.timedelta(hours=-5, minutes=30),
    True,
    2**63 + 5,
)
r = both("parameters", "SELECT " + ", ".join(["%s"] * len(params)), params)
if r[0] != "error":
    expect("parameters: int", r[0][0][0], 42)
    expect("parameters: str", r[0][0][2], "ünïcödé 🎉")
    expect("parameters: None", r[0][0][3], None)
r = both("WHERE with parameters",
         "SELECT id, vc, e, s FROM types WHERE id = %s OR vc = %s ORDER BY id",
         (2, "héllo wörld — 日本語 🎉🦀"))
expect("WHERE with parameters: ids", [row[0] for row in r[0]] if r[0] != "error" else r, [1, 2])
both("dict parameters", "SELECT %(a)s, %(b)s", {"a": "x'y\"z\\", "b": 3})

# executemany: a batched multi-row INSERT, then single UPDATEs.
batch = [(f"name {i} ✓", decimal.Decimal(f"{i}.25"), datetime.datetime(2020, 1, 1 + i % 28, i % 24))
         for i in range(50)]
results = []
for conn, table in ((router, "many_router"), (direct, "many_direct")):
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} (name, amount, at) VALUES (%s, %s, %s)", batch)
        inserted = (cur.rowcount, cur.lastrowid)
        cur.executemany(f"UPDATE {table} SET amount = amount + %s WHERE id = %s",
                        [(1, 1), (2, 2), (3, 999)])
        updated = cur.rowcount
        cur.execute(f"SELECT id, name, amount, at FROM {table} ORDER BY id")
        results.append((inserted, updated, cur.fetchall()))
same("executemany", results[0], results[1])
expect("executemany: rows and first id", results[0][0], (50, 1))
expect("executemany: updated", results[0][1], 2)
expect("executemany: rows read back", len(results[0][2]), 50)

# Errors keep their class, code and message, and the connection goes on.
r = both("unknown table", "SELECT * FROM no_such_table")
expect("unknown table: error", r[:2] + (r[2][0],) if r[0] == "error" else r,
       ("error", "ProgrammingError", 1146))
r = both("syntax error", "SELEC 1")
expect("syntax error: code", r[2][0] if r[0] == "error" else r, 1064)
r = both("duplicate key", "INSERT INTO many_router (id, name) VALUES (1, 'dup')")
expect("duplicate key: error", r[:2] + (r[2][0],) if r[0] == "error" else r,
       ("error", "IntegrityError", 1062))
both("after errors", "SELECT 1 + 1")

# Warnings in non-strict mode.
both("sql_mode", "SET SESSION sql_mode = ''")
r = both("truncation warnings",
         "SELECT CAST('12abc' AS SIGNED), CAST('x' AS DOUBLE), CAST('2020-13-45' AS DATE)")
expect("truncation warnings: count", r[5] if r[0] != "error" else r, 3)

# ping, select_db.
for name, conn in (("router", router), ("direct", direct)):
    try:
        conn.ping(reconnect=False)
        expect(f"ping ({name})", True, True)
    except pymysql.err.MySQLError as e:
        expect(f"ping ({name})", repr(e), "no error")
dbs = []
for conn in (router, direct):
    conn.select_db("pyother")
    with conn.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        first = cur.fetchone()[0]
        cur.execute("SELECT COUNT(*) FROM marker")
        count = cur.fetchone()[0]
    try:
        conn.select_db("no_such_db")
        err = None
    except pymysql.err.MySQLError as e:
        err = (type(e).__name__, e.args[0])
    conn.select_db(DB)
    with conn.cursor() as cur:
        cur.execute("SELECT DATABASE(), COUNT(*) FROM types")
        back = cur.fetchone()
    dbs.append((first, count, err, back))
same("select_db", dbs[0], dbs[1])
expect("select_db", dbs[0], ("pyother", 1, ("OperationalError", 1049), (DB, 5)))

# Transactions with autocommit off: rollback undoes, commit makes visible to others.
observer = connect(LEADER_PORT, autocommit=True)
tx = []
for name, conn in (("router", router), ("direct", direct)):
    seen = []
    conn.autocommit(False)
    seen.append(conn.get_autocommit())
    with conn.cursor() as cur, observer.cursor() as obs:
        cur.execute("SELECT @@autocommit")
        seen.append(cur.fetchone()[0])
        cur.execute("INSERT INTO tx (via, v) VALUES (%s, 1)", (name,))
        cur.execute("SELECT COUNT(*) FROM tx WHERE via = %s", (name,))
        seen.append(("own, uncommitted", cur.fetchone()[0]))
        obs.execute("SELECT COUNT(*) FROM tx WHERE via = %s", (name,))
        seen.append(("other, uncommitted", obs.fetchone()[0]))
        conn.rollback()
        cur.execute("SELECT COUNT(*) FROM tx WHERE via = %s", (name,))
        seen.append(("own, rolled back", cur.fetchone()[0]))
        cur.execute("INSERT INTO tx (via, v) VALUES (%s, 2)", (name,))
        cur.execute("INSERT INTO tx (via, v) VALUES (%s, 3)", (name,))
        conn.commit()
        obs.execute("SELECT SUM(v) FROM tx WHERE via = %s", (name,))
        seen.append(("other, committed", int(obs.fetchone()[0] or 0)))
    conn.autocommit(True)
    seen.append(conn.get_autocommit())
    with conn.cursor() as cur:
        cur.execute("SELECT @@autocommit")
        seen.append(cur.fetchone()[0])
    tx.append(seen)
same("transactions", tx[0], tx[1])
expect("transactions", tx[0], [False, 0, ("own, uncommitted", 1), ("other, uncommitted", 0),
                               ("own, rolled back", 0), ("other, committed", 5), True, 1])
observer.close()

# A procedure with two result sets.
calls = []
for conn in (router, direct):
    with conn.cursor() as cur:
        cur.execute("CALL two_sets(%s)", (3,))
        sets = [(cur.fetchall(), cur.description)]
        while cur.nextset():
            sets.append((cur.fetchall(), cur.description))
        calls.append(sets)
    with conn.cursor() as cur:
        cur.execute("SELECT 'after CALL'")
        calls[-1].append(cur.fetchall())
same("CALL", calls[0], calls[1])
expect("CALL: result sets with rows", [len(s[0]) for s in calls[0][:2]], [1, 3])

router.close()
direct.close()

if failures:
    print("\n".join(failures))
    print(f"pymysql: {len(failures)} of {checks} checks failed")
    sys.exit(1)
print(f"pymysql: {checks} checks passed")
