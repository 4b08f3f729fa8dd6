"""Unconditional call forwarding, read from a SQLite table that can change while the server runs.

The table ``forward(user TEXT PRIMARY KEY, target TEXT)`` says where each user's calls go instead: another
user's name, or any SIP URI (a mobile through a gateway, say). Users without a row are rung as usual. Edit the
table at any time (``sqlite3 forward.db "INSERT OR REPLACE INTO forward VALUES ('bob', 'carol')"``): the next
call sees it.

The script does not query the database for every call: it keeps the table in memory and asks SQLite only
whether anything changed (``PRAGMA data_version``, no disk read when nothing did), so the straight path stays
free of I/O.

    FORWARD_DB=var/forward.db leansip serve --routes examples/routes/forward.py --users users.txt
"""

import os
import sqlite3

from leansip.routes import Routes

DB = os.environ.get("FORWARD_DB", "var/forward.db")


class ForwardTable:
    def __init__(self, path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("CREATE TABLE IF NOT EXISTS forward (user TEXT PRIMARY KEY, target TEXT NOT NULL)")
        self.version = None
        self.rules = {}

    def target(self, user):
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if version != self.version:  # another connection wrote: read the table again
            self.rules = dict(self.db.execute("SELECT user, target FROM forward"))
            self.version = version
        return self.rules.get(user)


table = ForwardTable(DB)
routes = Routes()


@routes.request("INVITE")
def call(req, ctx):
    if not ctx.authenticate():
        return
    user = req.ruri.user or ""
    target = table.target(user)
    if target is None:
        return ctx.relay(ctx.lookup() or None)
    if ":" in target:  # a SIP URI: straight there
        return ctx.relay(target)
    ctx.set_ruri(f"sip:{target}@{req.ruri.host}")  # another user: rung where that user is registered
    ctx.relay(ctx.lookup() or None)


@routes.request("*")
def other(req, ctx):
    if ctx.authenticate():
        ctx.relay()
