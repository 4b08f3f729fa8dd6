"""Numbers by prefix to carriers, local users by lookup, everything else 404.

A dialled number (the Request-URI's user part) that starts with a carrier's prefix goes to that carrier's
gateway, longest prefix first; a name of one of our users rings that user's registered phones; anything else is
404. The prefixes come from PREFIX_ROUTES, ``prefix=host:port`` pairs separated by commas:

    PREFIX_ROUTES="+1=10.0.0.5:5060,+44=10.0.0.6:5060,00=10.0.0.6:5060" \\
        leansip serve --routes examples/routes/prefix.py --users users.txt
"""

import os

from leansip.routes import Routes


def _carriers(text):
    table = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        prefix, _, gateway = item.partition("=")
        if not prefix or not gateway:
            raise ValueError(f"PREFIX_ROUTES: expected prefix=host:port, got {item!r}")
        table.append((prefix, gateway))
    return sorted(table, key=lambda pair: len(pair[0]), reverse=True)  # longest prefix wins


CARRIERS = _carriers(os.environ.get("PREFIX_ROUTES", "+1=127.0.0.1:5071,+44=127.0.0.1:5072"))

routes = Routes()


@routes.request("INVITE", "MESSAGE")
def call(req, ctx):
    number = req.ruri.user or ""
    for prefix, gateway in CARRIERS:
        if number.startswith(prefix):
            return ctx.relay(f"sip:{number}@{gateway}")
    phones = ctx.lookup()
    if phones:
        return ctx.relay(phones)
    ctx.reply(404, "No route to this number")
