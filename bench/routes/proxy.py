"""The built-in proxy written as a route script, for `make bench`'s "stateful-script" row.

What `leansip serve --mode proxy` does by itself: authenticate (when BENCH_ROUTES_AUTH=1; the benchmark's call
rows run without digest, as Kamailio's proxy configurations do), find the callee's registered contacts, relay
to them; anything not for one of our users goes where the request leads. In-dialog requests (ACK, BYE) follow
the Record-Route in the server core and never come here, as with the built-in mode. The row against the
built-in "stateful" row is the cost of routing in Python.
"""

import os

from leansip.routes import Routes

AUTH = os.environ.get("BENCH_ROUTES_AUTH", "0") == "1"

routes = Routes()


@routes.request("*")
def proxy(req, ctx):
    if AUTH and not ctx.authenticate():
        return
    contacts = ctx.lookup() if req.ruri.user else None
    ctx.relay(contacts or None)
