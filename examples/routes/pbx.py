"""A small PBX: the server's own users call each other; a busy or unanswered callee goes to voicemail.

Every request from a phone must authenticate (digest, the server's users file). A call to a user rings all of
that user's registered phones for RING_SECONDS; if the callee is busy (486), does not answer in time (408) or
has no phone registered (480), the call goes on to the voicemail box, a SIP phone at VOICEMAIL that answers and
records (serial forking). Calls to names that are not users get 404. In-dialog requests (ACK, BYE, re-INVITE)
follow the Record-Route and never come here.

    leansip serve --routes examples/routes/pbx.py --users users.txt --realm pbx
    PBX_VOICEMAIL=sip:vm@127.0.0.1:5090 PBX_RING_SECONDS=20 leansip serve --routes examples/routes/pbx.py ...
"""

import os

from leansip.routes import Routes

VOICEMAIL = os.environ.get("PBX_VOICEMAIL", "sip:vm@127.0.0.1:5090")
RING_SECONDS = float(os.environ.get("PBX_RING_SECONDS", "20"))

routes = Routes()


@routes.request("INVITE")
def call(req, ctx):
    if not ctx.authenticate():  # 407 with a challenge: the phone asks again with credentials
        return
    callee = req.ruri.user
    if not callee or not ctx.user_exists(callee):
        return ctx.reply(404, "No such user")
    ctx.relay(ctx.lookup(), timeout=RING_SECONDS, on_failure=voicemail)


def voicemail(req, ctx, response):
    """Every phone of the callee failed: busy, no answer or none registered go to voicemail; anything else
    (a 603 Decline, a 4xx of the caller's own making) goes back to the caller as it is."""
    if response.status in (408, 480, 486):
        ctx.relay(VOICEMAIL)


@routes.request("*")
def other(req, ctx):
    """MESSAGE, OPTIONS, SUBSCRIBE... between users: authenticated, then where the request leads."""
    if ctx.authenticate():
        ctx.relay()
