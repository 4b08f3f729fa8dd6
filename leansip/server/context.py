"""The request context: what a handler decides for one request, recorded for the core to carry out.

A handler (:mod:`leansip.server.handler`: a built-in mode or a route script) gets ``(req, ctx)``. It reads the
request, asks the context questions that need the server (:meth:`RequestContext.lookup`,
:meth:`RequestContext.authenticate`) and records one decision: :meth:`~RequestContext.reply`,
:meth:`~RequestContext.relay` or :meth:`~RequestContext.drop`. Nothing is sent while the handler runs; the core
reads the decision after it returns and carries it out (a stateless or stateful relay, a reply through the
request's server transaction or statelessly). The same handler therefore runs in the server and in a test that
only reads the decision (``leansip.testing``): the sans-I/O rule, applied to users' code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from leansip.server.gateways import GatewaySet
from leansip.server.routing import Target, contact_targets, uri_destination
from leansip.server.services import Services
from leansip.sip.errors import SipParseError
from leansip.sip.message import Request, Response, canonical_name
from leansip.sip.uri import TOKEN_CHARS, SipURI, parse_uri

#: what the handler decided (RequestContext.action)
UNDECIDED: Final = 0
REPLY: Final = 1
RELAY: Final = 2
DROP: Final = 3
#: no answer, but the request's server transaction stays and absorbs retransmissions (a rate-limited
#: authentication attempt: the client hears nothing until its own timer runs out)
ABSORB: Final = 4

ACTION_NAMES: Final = ("undecided", "reply", "relay", "drop", "absorb")

#: a failure handler: (request, context of the new decision, the best final response so far)
FailureHandler = Callable[[Request, "RequestContext", Response], None]


class RequestContext:
    """One request's decision, recorded. Read by the core after the handler returns.

    Decide exactly once: a second :meth:`reply` (final), :meth:`relay` or :meth:`drop` raises ``ValueError``.
    :meth:`authenticate` may decide (the challenge) and then returns False: return from the handler."""

    def __init__(self, services: Services, req: Request, source: tuple[str, int], transport: str, now: float,
                 conn_id: str | None = None) -> None:
        self.services = services
        self.request = req
        self.source = source
        self.transport = transport
        self.now = now
        self.conn_id = conn_id
        self.action = UNDECIDED
        #: REPLY: the status, reason and extra headers, or a response built already (a digest challenge)
        self.status = 0
        self.reason: str | None = None
        self.headers: list[tuple[str, str]] | None = None
        self.response: Response | None = None
        #: RELAY: the targets (None: where the request itself leads: its Route, else the location service for
        #: our users, else its Request-URI, as the built-in proxy does), transaction state, Record-Route
        self.targets: list[Target] | None = None
        self.stateful = services.settings.stateful
        self.record_route = services.settings.record_route
        #: RELAY (stateful): seconds an INVITE branch may ring before it is cancelled and counts as 408 (0: no
        #: limit but the transaction's own timers), and what to run when every branch failed
        self.timeout = 0.0
        self.on_failure: FailureHandler | None = None
        #: RELAY: the gateway set to relay to (``relay(gateways=...)``), None for the targets above
        self.gateway_set: GatewaySet | None = None
        #: the authenticated user name, once :meth:`authenticate` succeeded
        self.user: str | None = None
        #: fields to add to this call's record (its CDR, when the server tracks calls): name -> value; read after
        #: the handler returns (and after a failure handler, whose own ``ctx.cdr`` adds to the same record)
        self.cdr: dict[str, str] = {}

    # ------------------------------------------------------------------ questions
    def authenticate(self) -> bool:
        """Digest-authenticate the request (RFC 3261 22, the server's users): True when it carries valid
        credentials (``ctx.user`` is then the user name). Otherwise the decision is made here: 401 for a
        REGISTER, 407 for anything else, with a fresh challenge (or 403 for a blocked source, or no answer for
        a source being slowed down): return False, and the handler returns too.

        ACK and CANCEL are never challenged (they cannot be answered with a 401/407): True."""
        req = self.request
        method = req.method
        if self.user is not None or method == "ACK" or method == "CANCEL":
            return True
        user, resp = self.services.check_credentials(req, self.source, self.now, proxy=method != "REGISTER")
        if user is not None:
            self.user = user
            return True
        self._decide(ABSORB if resp is None else REPLY)
        self.response = resp
        return False

    def lookup(self, uri: object = None) -> list[Target]:
        """The registered contacts of a user, best first, as targets for :meth:`relay`; empty when the user
        has none. ``uri``: a SIP URI (string or parsed), or a user name; default the Request-URI."""
        services = self.services
        if isinstance(uri, str) and ":" not in uri:
            aor = uri if "@" in uri or not services.settings.policy.use_domain else f"{uri}@{services.settings.realm}"
        else:
            aor = services.aor(self._sip_uri(self.request.ruri if uri is None else uri))
        return contact_targets(services.location.lookup(aor, self.now), services.flows)

    def user_exists(self, name: str) -> bool:
        """Is ``name`` one of the server's users (the users file)?"""
        return self.services.user_exists(name)

    # ------------------------------------------------------------------ decisions
    def reply(self, status: int, reason: str | None = None, headers: Sequence[tuple[str, str]] | None = None) -> None:
        """Answer the request with ``status`` (and ``reason``, extra ``(name, value)`` headers); ours, not
        forwarded. Through the request's transaction when there is one, so retransmissions get it again."""
        if not 200 <= status <= 699:
            raise ValueError(f"reply status must be 200-699, not {status!r}")
        self._decide(REPLY)
        self.status = status
        self.reason = reason
        self.headers = list(headers) if headers else None

    def relay(self, to: object = None, *, timeout: float = 0.0, on_failure: FailureHandler | None = None,
              stateful: bool | None = None, record_route: bool | None = None, gateways: str | None = None) -> None:
        """Forward the request. ``to``: nothing (where the request leads: its Route, else the location service
        for our users, else its Request-URI), one target (a SIP URI string: it becomes the Request-URI and the
        next hop; or a target from :meth:`lookup`) or a list of them (parallel forking: every one at once, the
        first 2xx wins). An empty list answers 480.

        ``gateways``: instead of ``to``, the name of a gateway set of the configuration (``[gateways.NAME]``):
        the request goes to the destination the set's policy picks, and on to the next one on a 408, a 503, a
        transport error or silence (the set's ``failover_on`` and ``timeout``), within the same transaction;
        503 at once when every destination is down. Always stateful.

        ``timeout``: seconds an INVITE branch may go unanswered before it is cancelled and counts as 408.
        ``on_failure(req, ctx, response)``: called when every branch failed (no 2xx) with the best final
        response, to decide again (relay elsewhere: serial forking; reply; or nothing: that response goes
        back). ``stateful``: default the server's mode (stateful whenever ``timeout`` or ``on_failure`` is given).
        ``record_route``: default the server's setting."""
        found: GatewaySet | None = None
        if gateways is not None:
            if to is not None:
                raise ValueError("relay() takes a target or a gateway set, not both")
            if stateful is False:
                raise ValueError("a gateway set is relayed statefully (failover needs the transaction)")
            found = self.services.gateways.get(gateways) if self.services.gateways is not None else None
            if found is None:
                known = ", ".join(self.services.gateways.sets) if self.services.gateways is not None else ""
                raise ValueError(f"no gateway set {gateways!r} (configured: {known or 'none'})")
            stateful = True
        self._decide(RELAY)
        if gateways is not None:
            self.gateway_set = found
        if to is not None:
            self.targets = self._targets(to)
        if timeout:
            if timeout < 0:
                raise ValueError(f"timeout must be positive, not {timeout!r}")
            self.timeout = float(timeout)
        self.on_failure = on_failure
        if stateful is not None:
            self.stateful = stateful
        elif on_failure is not None or timeout:
            self.stateful = True  # only a transaction can wait for the branches' outcome
        if record_route is not None:
            self.record_route = record_route
        if (on_failure is not None or timeout) and not self.stateful:
            raise ValueError("timeout and on_failure need a stateful relay (not stateful=False)")

    def drop(self) -> None:
        """Send nothing at all, and forget the request (a retransmission of it comes to the handler again)."""
        self._decide(DROP)

    # ------------------------------------------------------------------ edits of the request to relay
    def set_ruri(self, uri: str) -> None:
        """Rewrite the Request-URI (a SIP URI): what :meth:`lookup` and :meth:`relay` without targets use from
        now on, and what the request is relayed with."""
        self.request.uri = self._sip_uri(uri).text or uri

    def add_header(self, name: str, value: str) -> None:
        """Add a header line to the request that is relayed."""
        self.request.add_header(editable_name(name), line_value(value))

    def set_header(self, name: str, value: str) -> None:
        """Replace every header of that name with one line (or add it)."""
        self.request.set_header(editable_name(name), line_value(value))

    def remove_header(self, name: str) -> int:
        """Remove every header of that name; returns how many lines went."""
        return self.request.remove_header(editable_name(name))

    # ------------------------------------------------------------------ helpers
    def _decide(self, action: int) -> None:
        if self.action != UNDECIDED:
            raise ValueError(f"the request was already decided ({ACTION_NAMES[self.action]}): decide once")
        self.action = action

    def _sip_uri(self, uri: object) -> SipURI:
        if isinstance(uri, SipURI):
            return uri
        if isinstance(uri, str):
            try:
                parsed = parse_uri(uri)
            except SipParseError as exc:
                raise ValueError(f"not a SIP URI: {uri!r} ({exc.reason})") from None
            if isinstance(parsed, SipURI):
                return parsed
        raise ValueError(f"not a SIP URI: {uri!r}")

    def _target(self, to: object) -> Target:
        if isinstance(to, Target):
            return to
        uri = self._sip_uri(to)
        hop = uri_destination(uri)
        if hop is None:
            raise ValueError(f"no address in {to!r}")
        return Target(uri.text or uri.build(), hop[0], hop[1])

    def _targets(self, to: object) -> list[Target]:
        if isinstance(to, (list, tuple)):
            return [self._target(t) for t in to]
        return [self._target(to)]


#: headers the transaction and the dialog are made of: a script may read them, not edit them
_FIXED: Final = frozenset({"via", "from", "to", "call-id", "cseq", "content-length"})


def editable_name(name: str) -> str:
    """The canonical name of a header a handler may edit; ValueError for the ones it may not."""
    key = canonical_name(name.strip())
    if not key or key in _FIXED:
        raise ValueError(f"header {name!r} cannot be edited by a route (transaction and dialog are built on it)")
    if not all(c in TOKEN_CHARS for c in key):
        raise ValueError(f"not a header name: {name!r}")
    return key


def line_value(value: str) -> str:
    """A header value a handler gives, checked to be one line."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"a header value is one line: {value!r}")
    return value
