"""Helper process: hold an exclusive write lock on a project database for a while, then commit a setting.

Usage: python _locker.py DB HOLD_S
Prints "locked" once it holds the lock and "released" after COMMIT.
"""

import sqlite3
import sys
import time


def main() -> None:
    db, hold_s = sys.argv[1], float(sys.argv[2])
    con = sqlite3.connect(db, isolation_level=None, timeout=30)
    con.execute("BEGIN EXCLUSIVE")
    con.execute("INSERT OR REPLACE INTO settings(key, value) VALUES ('locker', '\"was here\"')")
    print("locked", flush=True)
    time.sleep(hold_s)
    con.execute("COMMIT")
    print("released", flush=True)
    con.close()


if __name__ == "__main__":
    main()
