"""The shell around calls: call tracking, call detail records and gateway probes in ``leansip serve``.

Theory of operation
-------------------
:class:`CallsRuntime` builds, from the configuration, the sans-I/O parts the core and the proxy use
(:class:`~leansip.server.calls.CallTracker`, the gateway sets of :mod:`leansip.server.gateways` and their
:class:`~leansip.server.gateways.GatewayProber`) and the one part that does I/O, the CDR writer thread
(:class:`~leansip.app.cdr.CdrWriter`). It then drives them with the clock, off the straight path:

* a tick every :data:`TICK` seconds hands the calls that were answered or ended to the writer (a queue put) and
  ends the calls whose timeout passed (``CallTracker.expire``);
* a probe task sleeps until the prober's next deadline and sends what it returns through the runtime's
  ``dispatch`` (the same way out as every other datagram);
* at start the calls that were up when the server last stopped (their CDR rows have no end) are tracked again,
  and at shutdown the attempts not answered yet are recorded as ended and the writer drains before it closes.

It also turns their state into JSON for the admin API and into Prometheus metrics (:class:`CallsCollector`), so
``admin.py`` only routes requests here.

Call tracking needs a stateful proxy: a stateless proxy keeps nothing between two messages, so it cannot know
that a BYE ends the call its INVITE started. :attr:`CallsRuntime.why_not` says so, and the page, the API and
``leansip status`` repeat it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from leansip.app.cdr import CdrWriter, next_id, open_calls
from leansip.app.config import Config
from leansip.app.logging import log_event
from leansip.server.calls import SETUP_BOUNDS, STATE_ENDED, Call, CallTracker, party
from leansip.server.gateways import (
    Gateway,
    GatewayProber,
    GatewayRoutes,
    Gateways,
    GatewaySet,
    parse_gateways,
)
from leansip.sip.send import Send

log = logging.getLogger("leansip.calls")

#: Seconds between two hand-overs of records to the CDR writer (what a kill -9 loses at most, plus the commit).
TICK = 0.5
#: An answered call's row is written (without an end) once it has lasted this long (see CallsRuntime.flush).
OPEN_DELAY = 2.0


def call_json(call: Call, now: float) -> dict[str, Any]:
    """A live call as the API and the page show it."""
    return {
        "id": call.id,
        "caller": party(call.from_value),
        "callee": party(call.to_value),
        "state": "answered" if call.answer else ("ringing" if call.ring else "trying"),
        "start": call.start,
        "answer": call.answer or None,
        "duration": round(call.duration(now), 1),
        "age": round(max(0.0, now - call.start), 1),
        "call_id": call.call_id,
        "caller_addr": call.caller_addr,
        "caller_transport": call.caller_transport,
        "callee_addr": call.callee_addr,
        "callee_transport": call.callee_transport,
        "session_expires": call.session_expires or None,
        "extra": dict(call.extra) if call.extra else {},
    }


class CallsRuntime:
    """Call tracking, CDRs and gateway sets of one server (see the module docstring)."""

    def __init__(self, config: Config, now: float) -> None:
        self.config = config
        self.tracker: CallTracker | None = None
        self.writer: CdrWriter | None = None
        self.cdr_path: Path | None = None
        #: the gateway sets and the routes to them (handed to the core; the prober probes the sets)
        self.gateways: Gateways = parse_gateways(config.gateways, config.gateway_routes)
        self.sets: dict[str, GatewaySet] = self.gateways.sets
        self.routes: GatewayRoutes = self.gateways.routes
        self.prober: GatewayProber | None = None
        self.restored = 0
        self.why_not = ""
        #: answered calls not written yet, in answer order (see :meth:`flush`)
        self._young: deque[Call] = deque()
        if config.mode != "proxy" or not config.stateful:
            self.why_not = (f"{config.mode} mode: no calls pass through it" if config.mode != "proxy" else
                            "stateless proxy: it keeps nothing between messages, so it cannot tell when a call "
                            "ends; calls are tracked by the stateful proxy (stateful = true)")
            return
        if not config.calls:
            self.why_not = "call tracking is off (calls = false)"
            return
        first_id = 0
        still_up: list[Call] = []
        if config.cdr:
            self.cdr_path = Path(config.cdr_path)
            self.cdr_path.parent.mkdir(parents=True, exist_ok=True)
            first_id = next_id(self.cdr_path)
            still_up = open_calls(self.cdr_path)
            self.writer = CdrWriter(self.cdr_path, retention_days=config.cdr_retention_days,
                                    open_ids=[c.id for c in still_up])
        self.tracker = CallTracker(max_calls=config.max_calls, call_timeout=config.call_timeout,
                                   record=self.writer is not None, first_id=first_id)
        for call in still_up:
            if self.tracker.restore(call, now):
                self.restored += 1
            if self.restored:
                log_event(log, "calls_restored", level=logging.WARNING, count=self.restored)

    @property
    def tracking(self) -> bool:
        return self.tracker is not None

    # ------------------------------------------------------------------ running
    def start(self, local_addresses: list[tuple[str, str, int]], dispatch: Callable[[list[Send]], None],
              server_name: str = "leansip") -> list[asyncio.Task[None]]:
        """Start the tick and the probes; returns their tasks (cancel them at shutdown, then :meth:`close`).
        The prober is then in :attr:`prober`, for the core to give it the answers to its probes."""
        tasks = []
        if self.tracker is not None:
            tasks.append(asyncio.create_task(self._tick()))
        if any(s.probe_interval > 0 for s in self.sets.values()):
            by_transport: dict[str, tuple[str, int]] = {}
            for transport, host, port in local_addresses:
                by_transport.setdefault(transport, (host, port))
            first = by_transport.get("udp") or next(iter(by_transport.values()), ("127.0.0.1", 5060))

            def via(branch: str, transport: str) -> str:
                host, port = by_transport.get(transport, first)
                shown = f"[{host}]" if ":" in host else host
                return f"SIP/2.0/{transport.upper()} {shown}:{port};branch={branch};rport"

            self.prober = GatewayProber(list(self.sets.values()), via, host=first[0], server_name=server_name,
                                        now=time.time())
            self.prober.on_change = _log_change
            tasks.append(asyncio.create_task(self._probe(dispatch)))
        return tasks

    def flush(self, now: float) -> None:
        """Expire calls past their timeout and hand the records to the writer (the tick; tests call it too).

        Ended calls go to the writer at once. An answered call waits in :attr:`_young` until it has lasted
        :data:`OPEN_DELAY` seconds: if it is still up then, its row is written without an end (so a crash or a
        restart keeps it); if it ended before, its one complete row is all it costs."""
        tracker = self.tracker
        if tracker is None:
            return
        tracker.expire(now)
        writer = self.writer
        if writer is None:
            return
        out = []
        young = self._young
        for call in tracker.drain():
            if call.state == STATE_ENDED:
                out.append(call)
            else:
                young.append(call)
        while young and (young[0].state == STATE_ENDED or young[0].answer <= now - OPEN_DELAY):
            call = young.popleft()
            if call.state != STATE_ENDED:
                out.append(call)
        writer.submit(out)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.flush(time.time())
            except Exception:  # noqa: BLE001 - keep serving; the traceback is logged
                log.exception("event=calls_tick_error")

    async def _probe(self, dispatch: Callable[[list[Send]], None]) -> None:
        prober = self.prober
        assert prober is not None
        while True:
            try:
                out = prober.handle_timers(time.time())
                if out:
                    dispatch(out)
            except Exception:  # noqa: BLE001
                log.exception("event=probe_error")
            at = prober.next_deadline()
            await asyncio.sleep(1.0 if at is None else min(1.0, max(0.01, at - time.time())))

    def on_transport_error(self, data: bytes, now: float) -> bool:
        return self.prober is not None and self.prober.on_transport_error(data, now)

    def close(self, now: float) -> None:
        """Record the attempts cut short, write everything, stop the writer (answered calls stay open)."""
        tracker = self.tracker
        if tracker is not None:
            tracker.shutdown(now)
            if self.writer is not None:
                self.writer.submit(tracker.drain())
        if self.writer is not None:
            self.writer.close()

    # ------------------------------------------------------------------ views
    def calls_doc(self, now: float, limit: int | None = None) -> dict[str, Any]:
        tracker = self.tracker
        if tracker is None:
            return {"tracking": False, "reason": self.why_not, "calls_in_progress": 0, "calls": []}
        calls = tracker.live()
        if limit is not None:
            calls = calls[:limit]
        ringing, answered = tracker.counts()
        return {"tracking": True, "calls_in_progress": ringing + answered, "ringing": ringing,
                "answered": answered, "limit": tracker.max_calls, "calls": [call_json(c, now) for c in calls]}

    def call_count(self) -> int:
        return len(self.tracker) if self.tracker is not None else 0

    def gateways_doc(self) -> dict[str, Any]:
        return {"sets": [s.as_dict() for s in self.sets.values()],
                "routes": [{"set": r.set_name, "prefix": r.prefix, "domain": r.domain, "strip": r.strip,
                            "add": r.add} for r in self.routes.routes]}


def _log_change(g: Gateway) -> None:
    log_event(log, f"gateway_{g.state}", level=logging.WARNING if g.state == "down" else logging.INFO,
              set=g.set_name, gateway=g.address, transport=g.transport, last=g.last_result)


class CallsCollector:
    """Prometheus metrics of calls, CDRs and gateways, read at each scrape."""

    def __init__(self, calls: CallsRuntime) -> None:
        self.calls = calls

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        tracker = self.calls.tracker
        if tracker is not None:
            ringing, answered = tracker.counts()
            progress = GaugeMetricFamily("leansip_calls_in_progress", "calls being set up (trying/ringing) or "
                                         "talked (answered)", labels=["state"])
            progress.add_metric(["ringing"], ringing)
            progress.add_metric(["answered"], answered)
            yield progress
            yield GaugeMetricFamily("leansip_calls_limit", "calls tracked at once at most (max_calls)",
                                    value=tracker.max_calls)
            yield CounterMetricFamily("leansip_call_attempts", "initial INVITEs relayed as call attempts",
                                      value=tracker.attempts)
            yield CounterMetricFamily("leansip_calls_answered", "call attempts answered (2xx)",
                                      value=tracker.answered_count)
            failed = CounterMetricFamily("leansip_calls_failed", "call attempts that ended unanswered, by the "
                                         "class of their final status (none: no final status, e.g. a timeout)",
                                         labels=["class"])
            for k, n in enumerate(tracker.failed_by_class):
                if k == 0 or k >= 3:
                    failed.add_metric(["none" if k == 0 else f"{k}xx"], n)
            yield failed
            yield CounterMetricFamily("leansip_calls_refused", "call attempts answered 503 because max_calls "
                                      "calls were tracked (or their text reached its bound)",
                                      value=tracker.refused)
            yield GaugeMetricFamily("leansip_calls_text_bytes", "the peers' text the tracked calls keep (Call-ID, "
                                    "tags, From, To), characters; bounded", value=tracker.held_bytes)
            yield CounterMetricFamily("leansip_calls_timed_out", "calls ended by call_timeout or an RFC 4028 "
                                      "session timer (a BYE that never came)", value=tracker.timed_out)
            setup = HistogramMetricFamily("leansip_call_setup_seconds", "INVITE relayed to the first 18x or 2xx")
            cumulative = 0
            rows = []
            for bound, n in zip(SETUP_BOUNDS, tracker.setup_buckets, strict=False):
                cumulative += n
                rows.append((repr(bound), cumulative))
            rows.append(("+Inf", tracker.setup_count))
            setup.add_metric([], rows, tracker.setup_sum)
            yield setup
        writer = self.calls.writer
        if writer is not None:
            yield CounterMetricFamily("leansip_cdr_written", "call detail records committed", value=writer.written)
            yield GaugeMetricFamily("leansip_cdr_pending", "records handed to the writer, not committed yet",
                                    value=writer.pending)
            yield CounterMetricFamily("leansip_cdr_errors", "failed CDR commits (retried)", value=writer.errors)
            yield CounterMetricFamily("leansip_cdr_dropped", "records dropped: before the writer got them, or past "
                                      "its queue's bound while commits failed",
                                      value=writer.dropped + (tracker.dropped_records if tracker is not None else 0))
        if self.calls.sets:
            up = GaugeMetricFamily("leansip_gateway_up", "1 when the gateway is up (probes), else 0",
                                   labels=["set", "gateway", "transport"])
            selected = CounterMetricFamily("leansip_gateway_selected", "requests sent to the gateway",
                                           labels=["set", "gateway"])
            failed_over = CounterMetricFamily("leansip_gateway_failovers", "requests that failed over from the "
                                              "gateway to the next (408, 503, transport error, no answer)",
                                              labels=["set", "gateway"])
            unavailable = CounterMetricFamily("leansip_gateway_set_unavailable", "requests refused because every "
                                              "gateway of the set was down", labels=["set"])
            for s in self.calls.sets.values():
                unavailable.add_metric([s.name], s.unavailable)
                for g in s.gateways:
                    up.add_metric([s.name, g.address, g.transport], 1 if g.up else 0)
                    selected.add_metric([s.name, g.address], g.selected)
                    failed_over.add_metric([s.name, g.address], g.failed)
            yield up
            yield selected
            yield failed_over
            yield unavailable


__all__ = ["OPEN_DELAY", "TICK", "CallsCollector", "CallsRuntime", "call_json"]
