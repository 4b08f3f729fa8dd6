"""Calls through the stateful proxy: RFC 3261 dialogs as a proxy sees them, for the live view and the CDRs.

Theory of operation
-------------------
A proxy that record-routes sees every request of a dialog but takes part in none, so it tracks a call from the
outside (as Kamailio's dialog module does), fed by the stateful proxy at five points::

    start(invite, source, transport, now)      an initial INVITE is relayed: a call *attempt* (state "trying")
    progress(call, status, dest, transport, now)   a 18x on the way back: an early dialog ("ringing")
    answered(call, response, dest, transport, now) the 2xx: the dialog is confirmed ("answered"), its To tag kept
    failed(call, status, reason, now)          the final non-2xx sent to the caller: the attempt ends
    in_dialog(request, now)                    a request with a To tag: a BYE (either side) ends the call, a
                                               re-INVITE or UPDATE keeps it (its 2xx goes to refreshed())

plus :meth:`cancelled` when the caller's CANCEL arrives (the attempt then ends with the 487 that follows, or is
answered anyway when a 2xx crosses the CANCEL: RFC 3261 9.2). A call the proxy never hears the end of (a BYE
lost, a phone unplugged) ends by :meth:`expire`: ``call_timeout`` seconds after the last sign of life (the answer,
a re-INVITE or an UPDATE), or earlier when the 2xx negotiated an RFC 4028 session timer: a session not refreshed
within its Session-Expires interval is over (RFC 4028 section 10; both ends then send a BYE themselves).

Every call attempt, answered or not, ends exactly once, and an ended call goes to :attr:`CallTracker.finished`
for the shell to write as a call detail record (``leansip.app.cdr``): the core only appends to a list. Caller and
callee stay the raw From/To values here; turning them into ``user@host`` is the reader's work, off the straight
path (:func:`party`).

Bounded: at most ``max_calls`` attempts and calls are tracked at once, and the peers' text they keep (Call-ID,
tags, From, To, reason phrase: :attr:`Call.size`) is at most ``max_bytes`` together (a From of 60 kB is a peer's
to send; 100,000 of them are not ours to hold); past either :meth:`start` returns None, and the proxy answers the
INVITE 503 (a call that cannot be billed is not connected), counted in :attr:`refused`. The
finished list is bounded by ``max_finished`` (records the shell has not collected are dropped and counted, which
only happens when nothing drains it). One deadline entry per call at most (a refresh moves the deadline, and
the entry is put back when it comes due: :meth:`expire`), so re-INVITEs cannot grow the queue.

Times are the ``now`` the core is given (wall-clock seconds in the server), so a record's times are dates.
"""

from __future__ import annotations

import json
import math
from typing import Final

from leansip.sip.errors import SipParseError
from leansip.sip.message import KIND_CALL_ID, KIND_FROM, KIND_TO, Request, Response
from leansip.sip.txtable import DeadlineQueue
from leansip.sip.uri import SipURI, TextBound, cache_text, digits_value, parse_name_addr

__all__ = [
    "Call",
    "CallTracker",
    "END_BYE",
    "END_CANCEL",
    "END_REJECTED",
    "END_SESSION_EXPIRED",
    "END_SHUTDOWN",
    "END_TIMEOUT",
    "SETUP_BOUNDS",
    "STATE_ANSWERED",
    "STATE_ENDED",
    "STATE_NAMES",
    "STATE_RINGING",
    "STATE_TRYING",
    "ROW_COLUMNS",
    "RecordRows",
    "format_addr",
    "record_rows",
    "parse_addr",
    "party",
]

STATE_TRYING: Final = 0  # INVITE relayed, no 18x/2xx yet
STATE_RINGING: Final = 1  # an early dialog: a 18x came back
STATE_ANSWERED: Final = 2  # the dialog is confirmed: a 2xx came back
STATE_ENDED: Final = 3
STATE_NAMES: Final = ("trying", "ringing", "answered", "ended")

# why a call ended (the CDR's end_reason)
END_BYE: Final = "bye"
END_CANCEL: Final = "cancel"
END_REJECTED: Final = "rejected"  # a final non-2xx answer (busy, not found, no answer, ...)
END_TIMEOUT: Final = "timeout"  # call_timeout without a sign of life: a BYE that never came
END_SESSION_EXPIRED: Final = "session-expired"  # RFC 4028: not refreshed within Session-Expires
END_SHUTDOWN: Final = "shutdown"  # the server stopped with the call up

# who hung up (the CDR's hangup)
BY_CALLER: Final = "caller"
BY_CALLEE: Final = "callee"
BY_PROXY: Final = "proxy"  # nobody did: a timeout, or the server stopping

#: upper bounds (seconds) of the call-setup histogram (INVITE relayed to the first 18x or 2xx)
SETUP_BOUNDS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_NBOUNDS: Final = 11
#: RFC 4028 section 4: no session interval is shorter than 90 s (a smaller value from a peer is not trusted to
#: end a call early)
MIN_SESSION_EXPIRES: Final = 90
#: party()'s memory: name-addr text (without the tag) -> user@host
_PARTIES: Final[dict[str, str]] = {}
_PARTIES_BOUND: Final = TextBound(4096, 1 << 20)
#: the peers' text the tracked calls may keep together, characters (CallTracker's ``max_bytes``): about 650
#: characters for each of 100,000 calls, where a phone's call keeps 150-300
MAX_CALL_BYTES: Final = 64 << 20
#: a reason phrase kept for a record (the rest of a longer one is a peer's padding)
MAX_REASON: Final = 128
#: a route script's extra CDR fields: how many, and how long a name or value may be
MAX_EXTRA_FIELDS: Final = 32
MAX_EXTRA_LENGTH: Final = 256


class Call:
    """One call attempt, and the call it becomes when answered. Read by the admin view and the CDR writer;
    written only by :class:`CallTracker`."""

    __slots__ = (
        "id", "call_id", "from_tag", "to_tag", "from_value", "to_value", "caller_source", "caller_transport",
        "callee_dest", "callee_transport", "start", "ring", "answer", "end", "state", "status", "reason", "hangup",
        "end_reason", "cancel", "session_expires", "deadline", "queued", "extra", "size", "held",
    )  # fmt: skip

    def __init__(self, id: int, call_id: str, from_tag: str, from_value: str, to_value: str,
                 caller_source: tuple[str, int], caller_transport: str, start: float) -> None:
        #: unique, and its start in milliseconds times 1024 plus a count (CallTracker.start): the records' key,
        #: which makes a time range a key range
        self.id = id
        self.call_id = call_id
        self.from_tag = from_tag
        #: the callee's tag, from the 2xx ("" until answered)
        self.to_tag = ""
        #: the INVITE's From and To values as received (parse with :func:`party`)
        self.from_value = from_value
        self.to_value = to_value
        #: where the INVITE came from, and the branch that answered (or rang, or last failed): kept as they are
        #: and formatted only when read (:attr:`caller_addr`, :attr:`callee_addr`); ("", 0) until known
        self.caller_source = caller_source
        self.caller_transport = caller_transport
        self.callee_dest = ("", 0)
        self.callee_transport = ""
        self.start = start
        self.ring = 0.0
        self.answer = 0.0
        self.end = 0.0
        self.state = STATE_TRYING
        self.status = 0
        self.reason = ""
        self.hangup = ""
        self.end_reason = ""
        #: the caller sent CANCEL
        self.cancel = False
        #: the negotiated RFC 4028 session interval, seconds (0: no session timer)
        self.session_expires = 0
        #: when the call is given up without a sign of life; ``queued``: the deadline its queue entry is at
        self.deadline = 0.0
        self.queued = 0.0
        #: fields a route script added to the record (name -> value), None when none
        self.extra: dict[str, str] | None = None
        #: the peers' text this call keeps, in characters (the tracker's byte bound), and whether it counts in
        #: the tracker's ``held_bytes`` (it is in the tracker's dict)
        self.size = 2 * (len(call_id) + len(from_tag)) + len(from_value) + len(to_value)
        self.held = False

    @property
    def caller_addr(self) -> str:
        return format_addr(self.caller_source)

    @property
    def callee_addr(self) -> str:
        return format_addr(self.callee_dest)

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]

    def duration(self, now: float) -> float:
        """Seconds talked: from the answer to the end (or to ``now`` while it lasts); 0 when never answered."""
        if self.answer == 0.0:
            return 0.0
        end = self.end if self.end else now
        return max(0.0, end - self.answer)

    def add_field(self, name: str, value: str) -> bool:
        """A route script's extra field for the record; False (and nothing kept) past the bounds."""
        extra = self.extra
        if extra is None:
            extra = self.extra = {}
        if name not in extra and len(extra) >= MAX_EXTRA_FIELDS:
            return False
        if not name or len(name) > MAX_EXTRA_LENGTH:
            return False
        extra[name] = value[:MAX_EXTRA_LENGTH]
        return True

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.call_id!r} {STATE_NAMES[self.state]} {self.status}>"


def format_addr(addr: tuple[str, int]) -> str:
    """``host:port`` (``[v6]:port``), "" for none."""
    host, port = addr
    if not host:
        return ""
    return ("[" + host + "]" if ":" in host else host) + ":" + str(port)


def parse_addr(text: str) -> tuple[str, int]:
    """The address :func:`format_addr` wrote (("", 0) for "" or anything else)."""
    host, sep, port = text.rpartition(":")
    number = digits_value(port, 5)
    if not sep or not host or number < 0:
        return ("", 0)
    return (host[1:-1] if host.startswith("[") else host, number)


def party(value: str) -> str:
    """``user@host`` of a From/To value (the URI without parameters for other schemes); the value itself when it
    does not parse (a record keeps what it can). Remembered by the value without its tag: the same callers and
    callees come back call after call (bounded, thread-safe: the CDR writer's thread calls it too)."""
    i = value.rfind(";tag=")
    base = value[:i] if i > value.rfind(">") >= 0 else value
    known = _PARTIES.get(base)
    if known is not None:
        return known
    try:
        uri = parse_name_addr(base).uri
    except SipParseError:
        return value
    if isinstance(uri, SipURI):
        user = uri.user_unescaped
        who = f"{user}@{uri.host}" if user else uri.host
    else:
        who = str(uri)
    cache_text(_PARTIES, _PARTIES_BOUND, base, who)
    return who


def _dialog_key(call_id: str, tag: str) -> str:
    return call_id + "\n" + tag


def _session_expires(resp: Response) -> int:
    """The session interval a 2xx agreed on (RFC 4028 section 9: its Session-Expires), 0 for none or garbage."""
    value = resp.header("session-expires")
    if value is None:
        return 0
    seconds = digits_value(value.partition(";")[0].strip(), 9)
    if seconds < 0:
        return 0
    return max(seconds, MIN_SESSION_EXPIRES)


class CallTracker:
    """The calls of a stateful proxy: a dict by (Call-ID, caller's tag), a deadline queue, counters.

    ``max_calls`` bounds what is tracked at once, ``max_bytes`` the peers' text those calls keep (characters);
    ``call_timeout`` is how long a call lives without a sign of life (seconds); ``record``: keep ended calls in :attr:`finished` for the CDR writer (off: counters only);
    ``first_id``: no call gets a smaller id (one past the largest id already recorded).
    """

    def __init__(self, *, max_calls: int = 100_000, call_timeout: float = 14_400.0, record: bool = True,
                 max_finished: int = 100_000, first_id: int = 0, max_bytes: int = MAX_CALL_BYTES) -> None:
        if max_calls < 1:
            raise ValueError("max_calls must be positive")
        if not call_timeout > 0:
            raise ValueError("call_timeout must be positive")
        self.max_calls = max_calls
        self.call_timeout = call_timeout
        self.record = record
        self.max_finished = max_finished
        self.max_bytes = max_bytes
        self.calls: dict[str, Call] = {}
        #: the sum of :attr:`Call.size` over the calls in :attr:`calls`
        self.held_bytes = 0
        #: ended calls not yet collected by the shell (:meth:`drain`)
        self.finished: list[Call] = []
        self._deadlines: DeadlineQueue[Call] = DeadlineQueue()
        self._next_id = first_id
        #: counters read by the admin view and /metrics
        self.attempts = 0
        self.answered_count = 0
        #: attempts that ended unanswered, by the class of their final status (index 3 ... 6), and at index 0
        #: those that ended without one (a timeout before any final answer, a shutdown)
        self.failed_by_class: list[int] = [0] * 7
        self.refused = 0
        self.timed_out = 0
        self.dropped_records = 0
        self.setup_buckets: list[int] = [0] * (_NBOUNDS + 1)
        self.setup_sum = 0.0
        self.setup_count = 0

    def __len__(self) -> int:
        return len(self.calls)

    # ------------------------------------------------------------------ the proxy's events
    def start(self, req: Request, source: tuple[str, int], transport: str, now: float) -> Call | None:
        """An initial INVITE (no To tag) is being relayed: a new attempt, or None when the bound is reached (the
        proxy then answers 503). Raises SipParseError for a From without a tag (validation refuses those first)."""
        calls = self.calls
        if len(calls) >= self.max_calls:
            self.refused += 1
            return None
        call_id = req.first_value(KIND_CALL_ID) or ""
        from_tag = req.from_tag or ""
        from_value = req.first_value(KIND_FROM) or ""
        to_value = req.first_value(KIND_TO) or ""
        if self.held_bytes + 2 * (len(call_id) + len(from_tag)) + len(from_value) + len(to_value) > self.max_bytes:
            self.refused += 1
            return None
        # the id: the start in ms times 1024, or one more than the last when that is larger (more than 1,024 in a
        # millisecond, or a clock set back): unique and in start order
        cid = int(now * 1000.0) * 1024
        if cid < self._next_id:
            cid = self._next_id
        self._next_id = cid + 1
        call = Call(cid, call_id, from_tag, from_value, to_value, source, transport, now)
        self.attempts += 1
        # the same caller's new attempt (after a 3xx, or a parallel one) takes the key; the older one still ends
        # through its own transaction (_end compares identity)
        self._hold(call)
        self._arm(call, now + self.call_timeout)
        return call

    def progress(self, call: Call, status: int, dest: tuple[str, int], transport: str, now: float) -> None:
        """A provisional response (not 100) came back on one of the attempt's branches: an early dialog."""
        if call.state != STATE_TRYING or status < 180:
            return
        call.state = STATE_RINGING
        call.ring = now
        call.callee_dest = dest
        call.callee_transport = transport
        self._observe_setup(now - call.start)

    def answered(self, call: Call, resp: Response, dest: tuple[str, int], transport: str, now: float) -> None:
        """The 2xx of the initial INVITE: the dialog is confirmed. Later 2xx (other forks, retransmissions of the
        first) change nothing: the caller ACKs and hangs up any other fork itself (RFC 3261 13.2.2.4)."""
        state = call.state
        if state >= STATE_ANSWERED:
            return
        if state == STATE_TRYING:
            self._observe_setup(now - call.start)
        call.state = STATE_ANSWERED
        call.answer = now
        call.status = resp.status
        call.reason = resp.reason[:MAX_REASON]
        call.to_tag = to_tag = _to_tag(resp)
        grown = len(to_tag) + len(call.reason)  # held past max_bytes at most by one response's To tag
        call.size += grown
        if call.held:
            self.held_bytes += grown
        call.callee_dest = dest
        call.callee_transport = transport
        self.answered_count += 1
        self._alive(call, resp, now)
        self._emit(call)  # its record is written now too: a call up when the server stops keeps a row

    def cancelled(self, call: Call) -> None:
        """The caller's CANCEL: the attempt ends with the final response that follows (487, or a 2xx that
        crossed it, which makes it a call after all)."""
        if call.state < STATE_ANSWERED:
            call.cancel = True

    def failed(self, call: Call, status: int, reason: str, now: float, dest: tuple[str, int] | None = None,
               transport: str = "") -> None:
        """The final non-2xx answer went to the caller: the attempt is over."""
        if call.state >= STATE_ANSWERED:
            return
        call.status = status
        call.reason = reason[:MAX_REASON]
        if dest is not None and not call.callee_dest[0]:
            call.callee_dest = dest
            call.callee_transport = transport
        if call.cancel:
            self._end(call, now, END_CANCEL, BY_CALLER)
        else:
            self._end(call, now, END_REJECTED, BY_CALLEE)

    def find(self, req: Request) -> Call | None:
        """The call an in-dialog request (one with a To tag) belongs to, whichever side sent it."""
        call_id = req.first_value(KIND_CALL_ID) or ""
        from_tag = req.from_tag or ""
        to_tag = req.to_tag or ""
        calls = self.calls
        call = calls.get(_dialog_key(call_id, from_tag))
        if call is not None and call.to_tag == to_tag:
            return call
        call = calls.get(_dialog_key(call_id, to_tag))
        if call is not None and call.to_tag == from_tag and call.to_tag:
            return call
        return None

    def in_dialog(self, req: Request, now: float) -> Call | None:
        """A request inside a dialog is being relayed. A BYE ends its call (hung up by whoever sent it) and
        returns None; a re-INVITE or UPDATE returns the call, whose 2xx then goes to :meth:`refreshed`."""
        call = self.find(req)
        if call is None or call.state != STATE_ANSWERED:
            return None
        if req.method == "BYE":
            by = BY_CALLER if call.from_tag == (req.from_tag or "") else BY_CALLEE
            self._end(call, now, END_BYE, by)
            return None
        return call

    def refreshed(self, call: Call, resp: Response, now: float) -> None:
        """A 2xx to a re-INVITE or UPDATE: the call is alive; its session interval may have changed."""
        if call.state == STATE_ANSWERED:
            self._alive(call, resp, now)

    def expire(self, now: float) -> int:
        """End the calls whose deadline passed (the shell calls this about once a second); returns how many."""
        queue = self._deadlines
        ended = 0
        while True:
            at = queue.earliest
            due = queue.pop_due(now)
            if due is None:
                return ended
            for call in due:
                if call.state == STATE_ENDED or call.queued != at:
                    continue  # over, or an entry left behind when the deadline moved earlier
                call.queued = 0.0
                if call.deadline > now:  # refreshed since it was queued: back in, at its new deadline
                    self._arm(call, call.deadline)
                    continue
                self.timed_out += 1
                ended += 1
                reason = END_SESSION_EXPIRED if call.session_expires else END_TIMEOUT
                self._end(call, now, reason, BY_PROXY)

    def shutdown(self, now: float) -> None:
        """The server stops: attempts not answered yet end now (their transactions end with the process). An
        answered call is not over: its record stays open, and :meth:`restore` takes it up at the next start."""
        for call in list(self.calls.values()):
            if call.state != STATE_ANSWERED:
                self._end(call, now, END_SHUTDOWN, BY_PROXY)

    def restore(self, call: Call, now: float) -> bool:
        """Track an answered call again after a restart (from its open record): its BYE or its timeout, counted
        from ``now``, ends it. False when the bound is reached (the record then stays open)."""
        call.size = 2 * (len(call.call_id) + len(call.from_tag)) + len(call.from_value) + len(call.to_value) \
            + len(call.to_tag) + len(call.reason)
        if len(self.calls) >= self.max_calls or call.state != STATE_ANSWERED \
                or self.held_bytes + call.size > self.max_bytes:
            return False
        self._hold(call)
        self._next_id = max(self._next_id, call.id + 1)
        self._arm(call, now + (call.session_expires or self.call_timeout))
        return True

    def drain(self) -> list[Call]:
        """The ended calls since the last drain, oldest first (for the CDR writer)."""
        out = self.finished
        if out:
            self.finished = []
        return out

    def live(self) -> list[Call]:
        """The calls being set up or talked, oldest first."""
        return sorted(self.calls.values(), key=_start_of)

    def counts(self) -> tuple[int, int]:
        """(ringing or trying, answered) calls at the moment."""
        answered = 0
        for call in self.calls.values():
            if call.state == STATE_ANSWERED:
                answered += 1
        return len(self.calls) - answered, answered

    # ------------------------------------------------------------------ internals
    def _hold(self, call: Call) -> None:
        """Put a call in the dict (in place of an older attempt under the same key, which stops counting)."""
        key = _dialog_key(call.call_id, call.from_tag)
        calls = self.calls
        old = calls.get(key)
        if old is not None:
            old.held = False
            self.held_bytes -= old.size
        calls[key] = call
        call.held = True
        self.held_bytes += call.size

    def _alive(self, call: Call, resp: Response, now: float) -> None:
        se = _session_expires(resp)
        if se:
            call.session_expires = se
            self._arm(call, now + se)
        else:
            call.session_expires = 0
            self._arm(call, now + self.call_timeout)

    def _arm(self, call: Call, at: float) -> None:
        # whole seconds: a second's deadlines share one queue entry (DeadlineQueue keeps a list per deadline)
        at = float(math.ceil(at))
        call.deadline = at
        if call.queued == 0.0 or at < call.queued:
            # a later deadline waits for the queued entry to come due (expire() puts it back): one entry per call
            # in the steady state, however often a dialog is refreshed
            self._deadlines.add(at, call)
            call.queued = at

    def _observe_setup(self, seconds: float) -> None:
        i = _setup_bucket(seconds)
        self.setup_buckets[i] = self.setup_buckets[i] + 1
        self.setup_sum += seconds
        self.setup_count += 1

    def _end(self, call: Call, now: float, end_reason: str, hangup: str) -> None:
        if call.state == STATE_ENDED:
            return
        call.end = now
        call.end_reason = end_reason
        call.hangup = hangup
        # the state last: the CDR writer reads calls in its own thread, and one it sees ended is complete
        call.state = STATE_ENDED
        if call.answer == 0.0:
            k = call.status // 100
            k = k if 3 <= k <= 6 else 0
            self.failed_by_class[k] = self.failed_by_class[k] + 1
        if call.held:
            call.held = False
            self.held_bytes -= call.size
            del self.calls[_dialog_key(call.call_id, call.from_tag)]
        self._emit(call)

    def _emit(self, call: Call) -> None:
        if self.record:
            finished = self.finished
            if len(finished) >= self.max_finished:
                del finished[0]
                self.dropped_records += 1
            finished.append(call)


# --------------------------------------------------------------------------------------- records
#: the columns of a call's record, in the order :func:`record_rows` fills them (``leansip.app.cdr``'s table)
ROW_COLUMNS: Final = (
    "id", "call_id", "from_tag", "to_tag", "caller", "callee", "start_time", "ring_time", "answer_time", "end_time",
    "duration", "status", "reason", "end_reason", "hangup", "caller_leg", "callee_leg", "session_expires", "extra",
)  # fmt: skip


class RecordRows:
    """What one batch of calls writes (see :func:`record_rows`)."""

    def __init__(self) -> None:
        #: whole rows (an ended call) or answer-time rows (a call up), in ROW_COLUMNS order
        self.inserts: list[tuple[object, ...]] = []
        #: (end_time, duration, end_reason, hangup, extra, id) of calls whose row was written while they were up
        self.ends: list[tuple[object, ...]] = []
        #: ids whose row is written without an end now, and ids whose row got its end
        self.opened: list[int] = []
        self.closed: list[int] = []


def record_rows(batch: list[Call], open_ids: set[int]) -> RecordRows:
    """The database writes for a batch of calls handed over by the tracker (answered or ended). ``open_ids``:
    the calls whose row exists without an end (their end is an update). A call in the batch twice (answered, then
    ended) is written once, as it is now. Here, compiled, because the CDR writer thread runs it for every call."""
    out = RecordRows()
    seen: set[int] = set()
    for call in batch:
        cid = call.id
        if cid in seen:
            continue
        seen.add(cid)
        ended = call.state == STATE_ENDED  # first: the tracker sets it last, so an ended call is complete
        extra: str | None = None
        if call.extra:
            extra = json.dumps(call.extra, ensure_ascii=False)
        answer = call.answer
        duration = call.end - answer if ended and answer > 0.0 else 0.0
        if duration < 0.0:
            duration = 0.0
        if ended and cid in open_ids:
            out.ends.append((call.end, duration, call.end_reason, call.hangup, extra, cid))
            out.closed.append(cid)
            continue
        out.inserts.append((
            cid, call.call_id, call.from_tag, call.to_tag, party(call.from_value), party(call.to_value), call.start,
            call.ring if call.ring > 0.0 else None, answer if answer > 0.0 else None, call.end if ended else None,
            duration, call.status, call.reason, call.end_reason if ended else "", call.hangup if ended else "",
            _leg(call.caller_transport, call.caller_source), _leg(call.callee_transport, call.callee_dest),
            call.session_expires, extra,
        ))  # fmt: skip
        if not ended:
            out.opened.append(cid)
    return out


def _leg(transport: str, addr: tuple[str, int]) -> str:
    """A leg as the record keeps it: ``udp 192.0.2.10:5062`` ("" when unknown)."""
    if not addr[0]:
        return ""
    return transport + " " + format_addr(addr)


def _start_of(call: Call) -> float:
    return call.start


def _setup_bucket(seconds: float) -> int:
    """The index in SETUP_BOUNDS of the first bound at or above ``seconds`` (11: above them all). Written out:
    compiled, a comparison with a literal is a machine compare, where indexing a tuple of floats boxes each."""
    if seconds <= 0.25:
        if seconds <= 0.025:
            return 0 if seconds <= 0.01 else 1
        if seconds <= 0.05:
            return 2
        return 3 if seconds <= 0.1 else 4
    if seconds <= 2.5:
        if seconds <= 0.5:
            return 5
        return 6 if seconds <= 1.0 else 7
    if seconds <= 5.0:
        return 8
    if seconds <= 10.0:
        return 9
    return 10 if seconds <= 30.0 else 11


def _to_tag(resp: Response) -> str:
    """The To tag of a 2xx: cut from the value when it is the usual ``...>;tag=x`` (no name-addr parse, which
    costs a parameter dict and a NameAddr the proxy never reads), else from the parsed To."""
    value = resp.first_value(KIND_TO) or ""
    i = value.rfind(";tag=")
    if i > value.rfind(">") >= 0:
        tag = value[i + 5:]
        if tag and ";" not in tag and " " not in tag and "\t" not in tag:
            return tag
    return resp.to_tag or ""
