"""Always-on internal timings of the server's two hot flows: REGISTER and initial INVITE.

Theory of operation
-------------------
The research that leansip follows measured where a bare-PC SIP server spends a request's time: parse,
authenticate, location lookup/update, build the response (or the forwarded request), send, and the total from
datagram in to datagram out.  :class:`StepTimer` keeps the same numbers, cheaply enough to leave on in
production:

* The clock is injected (``StepTimer(clock=time.perf_counter_ns)``, set by ``leansip.app.serve``), so the core
  stays sans-I/O and tests drive it with a fake clock.  ``ServerCore.timing`` is ``None`` when timing is off and
  then the core does nothing at all.
* Only step *boundaries* read the clock, and only for REGISTER and initial INVITE; any other request costs one
  clock read (in :meth:`start`) and a method comparison.
* Samples go into fixed, preallocated bucket arrays (quarter-octave log spacing, computed with
  ``int.bit_length``: no ``log()``, no search): no list grows, no object is kept per sample, no lock (the server
  is one thread per process).

The call sequence for one datagram (the shell calls the first and last, the core the middle ones)::

    datagram_in()            # leansip.io.udpserver, as the datagram arrives (optional)
    start()                  # ServerCore.receive entry
    begin_request(method, initial)   # after parse + validate: records PARSE for the two flows
    mark(STEP_AUTH)          # digest verified (only when auth is on)
    mark(STEP_LOCATION)      # registrar update / proxy routing decision done
    mark(STEP_BUILD)         # response / forwarded request serialized
    sent()                   # leansip.io.udpserver, after the datagrams left: SEND and TOTAL

A flow's step times are held in one attribute per step and committed together by :meth:`sent`, and only when
the flow reached ``STEP_BUILD``: a REGISTER answered with a 401 challenge or a 4xx, or an INVITE rejected by
routing, would otherwise mix short error paths into the numbers of the straight path.  Every step histogram of
a flow therefore has the same sample count, and the step means add up to (about) the total mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "FLOWS",
    "FLOW_INVITE",
    "FLOW_REGISTER",
    "STEPS",
    "STEP_AUTH",
    "STEP_BUILD",
    "STEP_LOCATION",
    "STEP_PARSE",
    "STEP_SEND",
    "STEP_TOTAL",
    "StepTimer",
    "bucket_bounds_ns",
]

FLOW_REGISTER: Final = 0
FLOW_INVITE: Final = 1
#: Flow names in index order (the ``flow`` label of ``leansip_step_seconds``).
FLOWS: Final = ("register", "invite")

STEP_PARSE: Final = 0
STEP_AUTH: Final = 1
STEP_LOCATION: Final = 2
STEP_BUILD: Final = 3
STEP_SEND: Final = 4
STEP_TOTAL: Final = 5
#: Step names in index order (the ``step`` label of ``leansip_step_seconds``).
STEPS: Final = ("parse", "auth", "location", "build", "send", "total")

_NSTEPS: Final = len(STEPS)
_NSERIES: Final = len(FLOWS) * _NSTEPS

# Buckets: index 0 holds samples <= 2**_MIN_EXP ns (64 ns); then four buckets per power of two (upper bounds
# 1.25, 1.5, 1.75, 2 times 2**e) up to 2**_MAX_EXP ns (about 34 s); the last index is the overflow bucket.
_MIN_EXP: Final = 6
_MAX_EXP: Final = 35
_LOW: Final = 1 << _MIN_EXP
NBUCKETS: Final = (_MAX_EXP - _MIN_EXP) * 4 + 2
_LAST: Final = NBUCKETS - 1


def bucket_bounds_ns() -> list[int]:
    """Inclusive upper bound (ns) of every bucket but the overflow one, ascending (``NBUCKETS - 1`` values)."""
    bounds = [_LOW]
    for e in range(_MIN_EXP, _MAX_EXP):
        for m in range(4):
            bounds.append((4 + m + 1) << (e - 2))
    return bounds


_BOUNDS: Final = bucket_bounds_ns()
assert len(_BOUNDS) == NBUCKETS - 1


def bucket_of(ns: int) -> int:
    """The bucket index of a sample: the smallest bucket whose upper bound is >= ``ns`` (Prometheus ``le``)."""
    x = ns - 1
    if x < _LOW:
        return 0
    e = x.bit_length() - 1
    i = ((e - _MIN_EXP) << 2) + ((x >> (e - 2)) & 3) + 1
    return i if i < _LAST else _LAST


class _Series:
    """The samples of one step of one flow: a count per bucket, their sum and their maximum.

    The sum and the maximum are int attributes (compiled: machine words); kept in lists, as they were, every
    sample made two int objects (a list holds objects) and freed two, ~1,500 instructions of the ~4,000 a
    REGISTER's six samples cost."""

    __slots__ = ("counts", "total", "peak")

    def __init__(self) -> None:
        self.counts = [0] * NBUCKETS
        self.total = 0
        self.peak = 0

    def add(self, ns: int) -> None:
        counts = self.counts
        k = bucket_of(ns)
        # spelled out: compiled, `a[i] += x` is a generic in-place add (PyNumber_InPlaceAdd)
        counts[k] = counts[k] + 1
        self.total += ns
        if ns > self.peak:
            self.peak = ns


class StepTimer:
    """Per-step latency histograms for REGISTER and initial INVITE (see the module docstring for the calls).

    ``clock`` returns integer nanoseconds (``time.perf_counter_ns``).  Reading methods (:meth:`snapshot`,
    :meth:`histogram`) may be called at any time from the same thread, e.g. by the admin endpoint.
    """

    __slots__ = ("clock", "_series", "_in", "_t0", "_last", "_flow", "_marked", "_parse", "_auth", "_location",
                 "_build")

    def __init__(self, clock: Callable[[], int]) -> None:
        self.clock = clock
        #: flow * len(STEPS) + step -> its samples
        self._series = [_Series() for _ in range(_NSERIES)]
        self._in = 0  # clock at datagram arrival, set by the shell; 0 = not given
        self._t0 = 0
        self._last = 0
        self._flow = -1  # -1: the current message is not timed
        self._marked = 0  # bit per step measured in the current flow
        # The current flow's step durations, committed together by sent(). One attribute per step, not a list:
        # compiled, an int attribute is a machine word, where a list item is an int object made for each store.
        self._parse = 0
        self._auth = 0
        self._location = 0
        self._build = 0

    # ------------------------------------------------------------------ recording (hot path)
    def datagram_in(self) -> None:
        """The shell saw a datagram arrive: the flow's total and its parse step start here."""
        self._in = self.clock()

    def start(self) -> None:
        """The core starts on a message (``ServerCore.receive`` entry); forgets any unfinished flow."""
        t = self._in
        if t:
            self._in = 0
        else:
            t = self.clock()
        self._t0 = self._last = t
        self._flow = -1
        self._marked = 0

    def begin_request(self, method: str, initial: bool) -> None:
        """After parse + validate: time this request if it is a REGISTER or an initial (no To tag) INVITE."""
        if method == "REGISTER":
            flow = FLOW_REGISTER
        elif method == "INVITE" and initial:
            flow = FLOW_INVITE
        else:
            return
        t = self.clock()
        self._flow = flow
        self._parse = t - self._last
        self._auth = self._location = self._build = 0  # nothing left over from a flow that never reached sent()
        self._marked = 1 << STEP_PARSE
        self._last = t

    def mark(self, step: int) -> None:
        """End of ``step`` (STEP_AUTH, STEP_LOCATION or STEP_BUILD) of the current flow; no-op when untimed."""
        if self._flow < 0:
            return
        t = self.clock()
        d = t - self._last
        if step == STEP_LOCATION:
            self._location += d
        elif step == STEP_BUILD:
            self._build += d
        elif step == STEP_AUTH:
            self._auth += d
        else:
            raise ValueError(f"not a step to mark: {step}")
        self._marked |= 1 << step
        self._last = t

    def forwarded(self) -> None:
        """The proxy forwarded the request: end STEP_BUILD here unless the proxy marked it itself.

        A proxy that marks STEP_LOCATION and STEP_BUILD (the stateless one) gets exact steps; one that does not
        still gets its INVITEs timed, with routing, location and build together in STEP_BUILD.
        """
        if self._flow >= 0 and not self._marked & (1 << STEP_BUILD):
            self.mark(STEP_BUILD)

    def abort(self) -> None:
        """Drop the current flow without recording it."""
        self._flow = -1

    def sent(self) -> None:
        """The shell wrote the core's output: record SEND and TOTAL and commit the flow if it reached BUILD."""
        flow = self._flow
        if flow < 0:
            return
        self._flow = -1
        marked = self._marked
        if not marked & (1 << STEP_BUILD):
            return
        t = self.clock()
        base = flow * _NSTEPS
        series = self._series
        series[base + STEP_PARSE].add(self._parse)
        if marked & (1 << STEP_AUTH):
            series[base + STEP_AUTH].add(self._auth)
        if marked & (1 << STEP_LOCATION):
            series[base + STEP_LOCATION].add(self._location)
        series[base + STEP_BUILD].add(self._build)
        series[base + STEP_SEND].add(t - self._last)
        series[base + STEP_TOTAL].add(t - self._t0)

    # ------------------------------------------------------------------ reading (admin, metrics)
    def count(self, flow: int, step: int) -> int:
        """Number of samples of one step of one flow."""
        return self._samples(flow * _NSTEPS + step)

    def _samples(self, series: int) -> int:
        return sum(self._series[series].counts)

    def histogram(self, flow: int, step: int, *, every: int = 4) -> tuple[list[tuple[float, int]], float, int]:
        """Cumulative buckets for Prometheus: ([(upper bound s, count <= bound)...], sum s, count).

        ``every=4`` keeps one bound per power of two (64 ns .. 17 s): the cumulative count at a coarser set of
        the same bounds is exact, and 30 buckets per series is plenty for a scrape.
        """
        series = self._series[flow * _NSTEPS + step]
        counts = series.counts
        out: list[tuple[float, int]] = []
        cumulative = 0
        for i, bound in enumerate(_BOUNDS):
            cumulative += counts[i]
            if i % every == 0:
                out.append((bound / 1e9, cumulative))
        return out, series.total / 1e9, sum(counts)  # the overflow bucket (no bound) included

    def quantile(self, flow: int, step: int, q: float) -> float | None:
        """The ``q`` quantile in ns, interpolated inside its bucket; None without samples."""
        series = flow * _NSTEPS + step
        n = self._samples(series)
        if n == 0:
            return None
        rank = q * n
        samples = self._series[series]
        counts = samples.counts
        peak = samples.peak
        cumulative = 0
        for i in range(NBUCKETS):
            c = counts[i]
            if c and cumulative + c >= rank:
                lo = 0 if i == 0 else _BOUNDS[i - 1]
                hi = _BOUNDS[i] if i < _LAST else max(peak, lo)
                value = lo + (hi - lo) * (rank - cumulative) / c
                return float(min(value, peak))
            cumulative += c
        return float(peak)  # pragma: no cover - rank <= n always lands in a bucket

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready summary per flow and step: count, mean/p50/p90/p99/max in microseconds."""
        out: dict[str, Any] = {}
        for f, flow_name in enumerate(FLOWS):
            steps: dict[str, Any] = {}
            for s, step_name in enumerate(STEPS):
                series = f * _NSTEPS + s
                n = self._samples(series)
                entry: dict[str, Any] = {"count": n}
                if n:
                    entry["mean_us"] = round(self._series[series].total / n / 1000, 3)
                    for label, q in (("p50_us", 0.5), ("p90_us", 0.9), ("p99_us", 0.99)):
                        value = self.quantile(f, s, q)
                        entry[label] = None if value is None else round(value / 1000, 3)
                    entry["max_us"] = round(self._series[series].peak / 1000, 3)
                steps[step_name] = entry
            out[flow_name] = steps
        return out

    def reset(self) -> None:
        """Forget every sample (e.g. between benchmark runs)."""
        self._series = [_Series() for _ in range(_NSERIES)]
