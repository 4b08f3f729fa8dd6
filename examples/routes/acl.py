"""Blocked destinations and a limit of simultaneous calls per user.

Calls to a number on BLOCKED (a comma-separated list of prefixes, e.g. premium-rate numbers) are refused with
403. Each caller (the authenticated user) may have at most MAX_CALLS calls at once, counted from the INVITE's
relay until the call fails or one side sends BYE; past it, 486 Busy Here. The script sees in-dialog requests too
(``Routes(in_dialog=True)``) to notice the BYEs, and the responses, to notice calls that fail.

    ACL_BLOCKED="+1900,+44909" ACL_MAX_CALLS=2 leansip serve --routes examples/routes/acl.py --users users.txt
"""

import os

from leansip.routes import Routes

BLOCKED = tuple(p.strip() for p in os.environ.get("ACL_BLOCKED", "+1900,+44909").split(",") if p.strip())
MAX_CALLS = int(os.environ.get("ACL_MAX_CALLS", "2"))
#: a call whose BYE never came is forgotten after this long, so a lost BYE does not block its user forever
FORGET_AFTER = 4 * 3600.0

routes = Routes(in_dialog=True)
calls = {}  # Call-ID -> (user, started)


def _active(user, now):
    for call_id, (_owner, started) in list(calls.items()):
        if now - started > FORGET_AFTER:
            del calls[call_id]
    return sum(1 for owner, _ in calls.values() if owner == user)


@routes.request("INVITE")
def invite(req, ctx):
    if req.to_tag is not None:  # a re-INVITE in a call we already count
        return ctx.relay()
    if not ctx.authenticate():
        return
    number = req.ruri.user or ""
    if number.startswith(BLOCKED):
        return ctx.reply(403, "Destination blocked")
    if req.call_id not in calls and _active(ctx.user, ctx.now) >= MAX_CALLS:
        return ctx.reply(486, "Too many calls")
    calls[req.call_id] = (ctx.user, ctx.now)
    ctx.relay(ctx.lookup() or None)


@routes.request("BYE")
def bye(req, ctx):
    calls.pop(req.call_id, None)
    ctx.relay()


@routes.request("*")
def other(req, ctx):
    if req.to_tag is not None or ctx.authenticate():  # in-dialog requests were authorised with their INVITE
        ctx.relay()


@routes.response
def failed(resp, ctx):
    if resp.status >= 300 and ctx.request is not None and ctx.request.method == "INVITE":
        calls.pop(resp.call_id, None)
