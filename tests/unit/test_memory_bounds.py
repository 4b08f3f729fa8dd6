"""Every structure keyed by what a peer sends has a stated bound, and holds to it (issue 23, part 2).

Each test feeds one structure more distinct keys than its bound (sans-I/O, fake ``now``) and checks its size
afterwards: in entries, and in bytes where one entry can be large -- the structure's own byte count where it
keeps one, and the memory :mod:`tracemalloc` sees it hold where the bound is stated in bytes. The bounds
themselves are listed in DESIGN.md ("Memory bounds").
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from leansip.app.memtrim import MemoryTrimmer
from leansip.server import calls as calls_mod
from leansip.server import services as services_mod
from leansip.server.context import FailureHandler, RequestContext
from leansip.server.handler import ResponseContext
from leansip.server.registrar import _CONTACT_KEYS, _CONTACT_KEYS_BOUND, RegistrarPolicy, contact_key
from leansip.server.replycache import ReplyCache
from leansip.server.stats import MAX_LABEL, Stats
from leansip.sip import message_headers as headers_mod
from leansip.sip import message_parse as parse_mod
from leansip.sip import uri as uri_mod
from leansip.sip.digest_auth import _ISSUED_MAX, DigestAuthenticator
from leansip.sip.digest_hash import _HA2_CACHE, _HA2_CACHE_SIZE, _HA2_KEY_MAX, _ha2
from leansip.sip.message import Request, Response, footprint, make_response, parse_message
from leansip.sip.ratelimit import FailureLimiter
from leansip.sip.send import Send
from leansip.sip.txtable import TooManyTransactions, TransactionTable
from tests.unit.proxy_kit import ALICE, BOB1, as_request, as_response, make_core, request, response_to

NOW = 1_000_000.0
MIB = 1 << 20


@contextmanager
def traced() -> Iterator[Callable[[], int]]:
    """Bytes allocated (and still held) since the block began, as tracemalloc sees them."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield lambda: tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()


def hostile_request(n: int, *, vias: int = 1, pad: int = 0, method: str = "OPTIONS") -> bytes:
    """A distinct request (its own Call-ID and branch), with ``vias`` Via lines and an ``X-Pad`` of ``pad``."""
    lines = [f"{method} sip:user{n}@127.0.0.1 SIP/2.0",
             f"Via: SIP/2.0/UDP 192.0.2.7:5062;rport;branch=z9hG4bK-{n}x"]
    lines += [f"Via: SIP/2.0/UDP 192.0.2.{i % 250}:{1024 + i};branch=z9hG4bK-{i}y{n}" for i in range(vias - 1)]
    lines += ["Max-Forwards: 70", f"From: <sip:a{n}@127.0.0.1>;tag=f{n}", f"To: <sip:user{n}@127.0.0.1>",
              f"Call-ID: c{n}@x", f"CSeq: 1 {method}"]
    if pad:
        lines.append("X-Pad: " + "p" * pad)
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ------------------------------------------------------------------ the parse caches


#: (name, the cache, its bound, a parse call that fills it from a text made of a number and a length)
TEXT_CACHES: list[tuple[str, dict, uri_mod.TextBound, Callable[[int, int], object]]] = [
    ("uri", uri_mod._URI_CACHE, uri_mod._URI_BOUND,
     lambda n, size: uri_mod.parse_uri(f"sip:u{n}@h{'x' * size}.example.com")),
    ("name-addr", uri_mod._NAME_ADDR_CACHE, uri_mod._NAME_ADDR_BOUND,
     lambda n, size: uri_mod.parse_name_addr(f'"d{n}" <sip:u{n}@h{"x" * size}.example.com>')),
    ("via", uri_mod._VIA_CACHE, uri_mod._VIA_BOUND,
     lambda n, size: uri_mod.parse_via(f"SIP/2.0/UDP h{n}{'x' * size}.example.com:5060;rport=5")),
    ("via-shape", uri_mod._VIA_SHAPES, uri_mod._VIA_SHAPES_BOUND,
     lambda n, size: uri_mod.parse_via(f"SIP/2.0/UDP h{n}{'x' * size}.example.com:5060;branch=z9hG4bK-{n}")),
    ("ip-literal", uri_mod._IP_LITERALS, uri_mod._IP_LITERALS_BOUND,
     lambda n, size: uri_mod.is_ip_literal(f"h{n}{'x' * size}")),
    ("valid-host", uri_mod._VALID_HOSTS, uri_mod._VALID_HOSTS_BOUND,
     lambda n, size: uri_mod.valid_host(f"h{n}{'x' * size}.example.com")),
    ("contact-key", _CONTACT_KEYS, _CONTACT_KEYS_BOUND,
     lambda n, size: contact_key(f"sip:u{n}@h{'x' * size}.example.com")),
    ("ipv6-form", services_mod._IPV6_FORMS, services_mod._IPV6_FORMS_BOUND,
     lambda n, size: services_mod.canonical_ipv6(f"h{n}{'x' * size}")),
    ("call-party", calls_mod._PARTIES, calls_mod._PARTIES_BOUND,
     lambda n, size: calls_mod.party(f"<sip:u{n}@h{'x' * size}.example.com>;tag=t{n}")),
]


@pytest.fixture
def empty_caches() -> Iterator[None]:
    for _name, cache, bound, _fill in TEXT_CACHES:
        cache.clear()
        bound.used = 0
    yield
    for _name, cache, bound, _fill in TEXT_CACHES:
        cache.clear()
        bound.used = 0


@pytest.mark.parametrize("name, cache, bound, fill", TEXT_CACHES, ids=[c[0] for c in TEXT_CACHES])
def test_text_cache_holds_its_entry_bound(name: str, cache: dict, bound: uri_mod.TextBound,
                                          fill: Callable[[int, int], object], empty_caches: None) -> None:
    for n in range(bound.entries + 100):
        fill(n, 0)
        assert len(cache) <= bound.entries
    assert len(cache) > 0


@pytest.mark.parametrize("name, cache, bound, fill", TEXT_CACHES, ids=[c[0] for c in TEXT_CACHES])
def test_text_cache_holds_its_character_bound(name: str, cache: dict, bound: uri_mod.TextBound,
                                              fill: Callable[[int, int], object], empty_caches: None) -> None:
    # keys just under the length bound: the character budget is reached long before the entry bound
    size = uri_mod.CACHE_KEY_MAX - 40
    for n in range(2 * bound.chars // size + 10):
        fill(n, size)
        assert bound.used <= bound.chars
    assert bound.used == sum(len(k) for k in cache) <= bound.chars
    assert len(cache) < bound.entries


@pytest.mark.parametrize("name, cache, bound, fill", TEXT_CACHES, ids=[c[0] for c in TEXT_CACHES])
def test_text_cache_keeps_no_long_key(name: str, cache: dict, bound: uri_mod.TextBound,
                                      fill: Callable[[int, int], object], empty_caches: None) -> None:
    for n in range(50):
        fill(n, uri_mod.CACHE_KEY_MAX + 1 + n * 1000)  # up to 50 kB, as a hostile header value may be
    assert all(len(k) <= uri_mod.CACHE_KEY_MAX for k in cache)


#: what a full cache of the largest keys it keeps may hold, in bytes: keys and parsed values together
URI_CACHE_BYTES = 12 * MIB


@pytest.mark.parametrize("name, cache, bound, fill", TEXT_CACHES[:2], ids=[c[0] for c in TEXT_CACHES[:2]])
def test_uri_caches_full_of_long_keys_stay_within_their_bytes(name: str, cache: dict, bound: uri_mod.TextBound,
                                                               fill: Callable[[int, int], object],
                                                               empty_caches: None) -> None:
    size = uri_mod.CACHE_KEY_MAX - 40
    with traced() as held:
        for n in range(bound.chars // size + 100):  # starts over once, ends nearly full
            fill(n, size)
        gc.collect()
        assert held() < URI_CACHE_BYTES, (name, len(cache), held())


def test_header_name_caches_keep_no_long_name_and_stop_at_their_size() -> None:
    names = parse_mod._NAME_CACHE
    before = dict(names)
    try:
        data = b"OPTIONS sip:a@b SIP/2.0\r\n" + b"".join(
            f"X-{'n' * (i % 200)}{i}: v\r\n".encode() for i in range(6000)) + b"\r\n"
        try:
            parse_message(data)
        except Exception:  # noqa: BLE001 - only the caches are looked at
            pass
        assert len(names) <= 4096
        assert all(len(k) <= headers_mod._NAME_KEY_MAX for k in names)
        for i in range(3000):
            headers_mod.display_name(f"x-{'d' * 100}-{i}")
            headers_mod._header_key(f"X-{'k' * 100}-{i}")
        assert len(headers_mod._DISPLAY_CACHE) <= 1024 and len(headers_mod._KEY_CACHE) <= 1024
        assert all(len(k) <= headers_mod._NAME_KEY_MAX for k in headers_mod._DISPLAY_CACHE)
        assert all(len(k) <= headers_mod._NAME_KEY_MAX for k in headers_mod._KEY_CACHE)
    finally:
        names.clear()
        names.update(before)


def test_ha2_cache_bounded_in_entries_and_key_length() -> None:
    cache = _HA2_CACHE["md5"]
    cache.clear()
    for n in range(_HA2_CACHE_SIZE + 100):
        _ha2("md5", f"REGISTER:sip:{n}@{'h' * (n % 400)}")
        assert len(cache) <= _HA2_CACHE_SIZE
    assert all(len(k) <= _HA2_KEY_MAX for k in cache)
    cache.clear()


# ------------------------------------------------------------------ the reply cache


def test_reply_cache_bounds_entries_bytes_and_one_entry() -> None:
    cache = ReplyCache(32.0, max_entries=100, max_bytes=64 << 10, max_entry_bytes=4 << 10)
    src = ("192.0.2.1", 5060)
    for n in range(1000):  # small entries: the entry bound
        cache.put(b"REGISTER %d" % n, src, [Send(b"SIP/2.0 200 OK", src)], NOW)
        assert len(cache) <= 100
    for n in range(1000):  # 3 kB entries: the byte bound
        cache.put(b"R" * 1500 + b"%d" % n, src, [Send(b"S" * 1500, src)], NOW)
        assert cache.nbytes <= 64 << 10
        assert cache.nbytes == sum(len(k) + sum(len(s.data) for s in v[2]) for k, v in cache._entries.items())
    assert len(cache) == (64 << 10) // 3003
    cache.put(b"big" * 2000, src, [Send(b"x", src)], NOW)  # one entry past its bound: not kept at all
    assert cache.get(b"big" * 2000, src, NOW) is None
    cache.expire(NOW + 33)
    assert len(cache) == 0 and cache.nbytes == 0


def test_reply_cache_in_bytes_of_memory() -> None:
    cache = ReplyCache(32.0, max_bytes=2 * MIB)
    src = ("192.0.2.1", 5060)
    with traced() as held:
        for n in range(3000):  # 6 kB a datagram, 6 kB its answer: 36 MB offered
            data = hostile_request(n, pad=6000)
            cache.put(data, src, [Send(b"SIP/2.0 400 Bad\r\n" + b"v" * 6000, src)], NOW)
        gc.collect()
        assert cache.nbytes <= 2 * MIB
        assert held() < 2 * MIB + 512 * 1024, held()  # entries, tuples and the OrderedDict besides the bytes


def test_core_reply_cache_stays_within_its_bytes_under_distinct_large_requests() -> None:
    core = make_core()
    for n in range(3000):
        core.receive(hostile_request(n, pad=3000).replace(b"sip:user", b"sip:127.0.0.1;u=", 1)
                     .replace(b"@127.0.0.1 SIP", b" SIP", 1), ("192.0.2.7", 5062), "udp", NOW)
    cache = core._reply_cache
    assert len(cache) > 100
    assert cache.nbytes <= core.settings.reply_cache_bytes


# ------------------------------------------------------------------ transactions


def test_footprint_is_not_below_what_a_parsed_request_holds() -> None:
    shapes = [hostile_request(1), hostile_request(2, vias=1000), hostile_request(3, pad=60_000),
              hostile_request(4, vias=300, pad=20_000)]
    for data in shapes:
        gc.collect()
        with traced() as held:
            msg = parse_message(data)
            gc.collect()
            used = held()
            assert footprint(msg) >= used, (len(data), footprint(msg), used)
        del msg


def _answered_table(max_answered: int, count: int) -> tuple[TransactionTable, list[int]]:
    table = TransactionTable(max_transactions=100_000, max_answered_bytes=max_answered)
    sizes = []
    rng = random.Random(1)
    for n in range(count):
        req = parse_message(hostile_request(n, vias=rng.choice((1, 50, 400)), pad=rng.choice((0, 2000, 30_000))))
        assert isinstance(req, Request)
        table.receive_request(req, ("192.0.2.7", 5062), "udp", NOW + n * 0.001)
        txn = table.match_request(req)
        assert txn is not None
        txn.send_response(make_response(req, 407, to_tag="t"), NOW + n * 0.001)
        txn.keep_response_only()
        sizes.append(len(table))
        assert table.answered_bytes <= max_answered
    return table, sizes


def test_answered_transactions_keep_their_response_and_stay_within_their_bytes() -> None:
    table, sizes = _answered_table(4 * MIB, 2000)
    assert table.ended_early > 0 and max(sizes) < 2000
    assert table.answered_bytes == sum(t.held for t in table.transactions())
    assert table.held_bytes == table.answered_bytes
    for txn in table.transactions():
        assert txn.request.headers and len(txn.request.headers) <= 2  # the Via and To lines, no more
    # the timers end the rest as before
    table.handle_timers(NOW + 100)
    assert len(table) == 0 and table.held_bytes == 0 and table.answered_bytes == 0


def test_answered_transactions_in_bytes_of_memory() -> None:
    with traced() as held:
        table, _sizes = _answered_table(MIB, 500)
        gc.collect()
        assert table.ended_early > 0
        assert held() < 2 * MIB, (held(), table.answered_bytes, len(table))


def test_live_transactions_are_refused_past_their_bytes() -> None:
    table = TransactionTable(max_transactions=100_000, max_bytes=2 * MIB)
    made = 0
    with pytest.raises(TooManyTransactions):
        for n in range(1000):
            req = parse_message(hostile_request(n, pad=30_000))
            assert isinstance(req, Request)
            table.receive_request(req, ("192.0.2.7", 5062), "udp", NOW)
            made += 1
    assert 2 * MIB // footprint(req) <= made <= 2 * MIB // 60_000 + 1
    assert table.held_bytes >= 2 * MIB > table.held_bytes - footprint(req)


def test_stateful_proxy_challenges_keep_only_their_answers() -> None:
    core = make_core(auth=True, max_transactions=100_000)
    table = core.proxy.table
    for n in range(400):  # INVITEs with 30 kB of headers, never ACKed: each waits for Timer H
        core.receive(hostile_request(n, pad=30_000, method="INVITE").replace(b"sip:user", b"sip:bob", 1),
                     ("192.0.2.7", 5062), "udp", NOW)
    assert len(table) == 400 and all(t.answered for t in table.transactions())
    assert table.held_bytes == table.answered_bytes < 400 * 2000  # the 407s (and keys), not the 30 kB requests


class _Decides:
    """A route script's handler, as a plain object: replies 404 to one request in three, drops one, relays the
    third statelessly -- each after the core made the request's server transaction."""

    wants_in_dialog = False
    wants_register = False
    wants_responses = False

    def __init__(self) -> None:
        self.n = 0

    def on_request(self, req: Request, ctx: RequestContext) -> None:
        self.n += 1
        if self.n % 3 == 0:
            ctx.reply(404)
        elif self.n % 3 == 1:
            ctx.drop()
        else:
            ctx.relay("sip:bob@192.0.2.50:5070", stateful=False)

    def on_register(self, req: Request, ctx: RequestContext) -> None:
        ctx.reply(403)

    def on_response(self, resp: Response, ctx: ResponseContext) -> None:  # pragma: no cover - wants_responses
        raise AssertionError("not asked for")

    def on_failure(self, fn: FailureHandler, req: Request, ctx: RequestContext, resp: Response) -> None:
        fn(req, ctx, resp)  # pragma: no cover - nothing relayed statefully


def test_handler_decisions_keep_only_answers() -> None:
    """A handler's reply leaves its transaction with the response only; a drop or a stateless relay forgets
    the transaction the core made before asking, with every byte it was counted for."""
    core = make_core(handler=_Decides(), max_transactions=100_000)
    table = core.proxy.table
    for n in range(300):
        core.receive(hostile_request(n, pad=30_000, method="INVITE"), ("192.0.2.7", 5062), "udp", NOW)
    assert len(table) == 100 and all(t.answered for t in table.transactions())
    assert table.held_bytes == table.answered_bytes < 100 * 2000  # the 404s (and keys), not the 30 kB requests
    assert core.held_bytes() == table.held_bytes + core._reply_cache.nbytes
    table.handle_timers(NOW + 100)
    assert len(table) == 0 and table.held_bytes == 0


# ------------------------------------------------------------------ rate limiter, digest, stats, registrar


def test_tracked_calls_are_refused_past_their_text_bytes() -> None:
    """Calls whose From is 30 kB: the tracker refuses new attempts (the proxy answers 503) once their text
    reaches ``max_bytes``, long before ``max_calls``; a long reason phrase is cut; ending them gives it all back."""
    tracker = calls_mod.CallTracker(max_calls=100_000, max_bytes=2 * MIB)
    started = []
    for n in range(200):
        inv = as_request(request("INVITE", "sip:bob@leansip", call_id=f"c{n}@x", from_user="a" * 30_000))
        call = tracker.start(inv, ALICE, "udp", NOW)
        if call is None:
            break
        started.append((inv, call))
    assert tracker.refused == 1 and 2 * MIB // 30_100 <= len(started) <= 2 * MIB // 30_000
    assert tracker.held_bytes == sum(c.size for c in tracker.calls.values()) <= 2 * MIB
    inv, call = started[0]
    ok = response_to(inv, 200).replace(b"SIP/2.0 200 X", b"SIP/2.0 200 " + b"r" * 20_000)
    tracker.answered(call, as_response(ok), BOB1, "udp", NOW + 1)
    assert len(call.reason) == calls_mod.MAX_REASON
    assert tracker.held_bytes == sum(c.size for c in tracker.calls.values())
    # a new attempt under a key already tracked (same Call-ID and From tag) takes its place: counted once
    tracker.failed(started[2][1], 486, "Busy Here", NOW + 1)  # room for it
    again = tracker.start(started[1][0], ALICE, "udp", NOW + 1)
    assert again is not None and tracker.held_bytes == sum(c.size for c in tracker.calls.values())
    for _inv, call in started:
        tracker.failed(call, 486, "Busy Here", NOW + 2)
    tracker.failed(again, 486, "Busy Here", NOW + 2)
    assert tracker.expire(NOW + 10 * tracker.call_timeout) == 1  # the answered one: its BYE never came
    assert tracker.held_bytes == 0 and len(tracker) == 0 and tracker.counts() == (0, 0)


def test_limiter_bounds_sources_and_failure_times() -> None:
    lim = FailureLimiter(max_sources=1000, max_stamps=5000)
    with traced() as held:
        for n in range(20_000):
            src = f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"
            for k in range(n % 7 + 1):
                lim.record_failure(src, NOW + k)
            assert len(lim) <= 1000 and lim.stamps <= 5000
        gc.collect()
        assert held() < 1000 * 300 + 5000 * 8 * 2, held()
    assert lim.stamps == sum(len(e.failures) for e in lim._sources.values())


def test_limiter_with_block_off_keeps_a_bounded_count_per_source() -> None:
    lim = FailureLimiter(threshold_slow=5, threshold_block=2**31)  # "never block" in the config
    for k in range(5000):
        lim.record_failure("10.0.0.1", NOW + k * 0.001)
    assert lim.stamps <= 1024


def test_digest_state_keyed_by_peers_is_bounded() -> None:
    auth = DigestAuthenticator(b"k" * 32, "leansip", 300, ("MD5",))
    for _n in range(_ISSUED_MAX + 500):
        auth.challenge(NOW)
    assert auth.issued_count() <= _ISSUED_MAX
    for n in range(200):  # a realm of the peer's is refused before anything is kept for it
        auth.verify(f'Digest username="u", realm="r{n}{"x" * 1000}", nonce="n", uri="sip:a", response="0"',
                    "REGISTER", lambda u, r, a: None, NOW, request_uri="sip:a")
    assert len(auth._realm_macs) <= 64 and len(auth._opaque) <= 64 and len(auth._dummy_ha1) <= 64
    nonces = auth.nonces
    small = type(nonces)(1000)
    for n in range(5000):
        small.use(f"nonce{n}", issued=NOW, expires=NOW + 300, nc=1, now=NOW)
    assert len(small) <= 1000


def test_stats_labels_are_bounded_and_never_the_peers_text() -> None:
    stats = Stats()
    for n in range(1000):
        stats.request(f"M{n}{'x' * (n % 100)}")
        stats.dropped(f"bad method 'IN{n}VITE'")
        stats.dropped(f"{'y' * 500}{n} trailing words")
    assert len(stats.requests) <= 65 and all(len(k) <= MAX_LABEL for k in stats.requests)
    assert len(stats.drops) <= 65 and all(len(k) <= MAX_LABEL for k in stats.drops)
    assert stats.drops["bad method"] == 1000


def test_registrar_refuses_new_bindings_past_its_bound() -> None:
    core = make_core()
    core.registrar.policy = RegistrarPolicy(max_bindings=50)
    statuses = []
    for n in range(80):
        data = (f"REGISTER sip:leansip SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.{n % 250}:5060;branch=z9hG4bK-r{n}\r\n"
                f"From: <sip:u{n}@leansip>;tag=a\r\nTo: <sip:u{n}@leansip>\r\nCall-ID: r{n}\r\nCSeq: 1 REGISTER\r\n"
                f"Contact: <sip:u{n}@192.0.2.1:5060>\r\nUser-Agent: {'ua' * 5000}\r\nContent-Length: 0\r\n\r\n")
        out = core.receive(data.encode(), ("192.0.2.1", 5060), "udp", NOW)
        statuses.append(parse_message(out[0].data).status)
    assert statuses.count(200) == 50 and statuses.count(503) == 30
    assert core.location.count() == 50
    assert all(len(b.user_agent) <= 256 for aor in core.location.aors() for b in core.location.lookup(aor, NOW))


def test_trimmer_gives_the_heap_back_after_a_large_drop_only() -> None:
    calls: list[int] = []
    trimmer = MemoryTrimmer(lambda pad: calls.append(pad) or 1, after_freed=16 * MIB)
    for held in (0, 10 * MIB, 40 * MIB, 30 * MIB, 25 * MIB):  # a flood's state grows, then 15 MiB of it goes
        assert not trimmer.tick(held)
    assert trimmer.tick(20 * MIB) and calls == [0]  # 20 MiB below the peak: the free pages go back
    assert not trimmer.tick(10 * MIB) and not trimmer.tick(5 * MIB)  # from where it trimmed, not the old peak
    assert not trimmer.tick(21 * MIB) and trimmer.tick(4 * MIB)
    assert calls == [0, 0]
    assert not MemoryTrimmer(None, after_freed=1).tick(0)  # no malloc_trim here (not glibc): nothing to do


def test_memory_trimmer_trims_when_the_rss_grows_during_a_flood() -> None:
    """The held bytes stay at their bounds during a flood; the heap's freed pages are what grows (issue 23)."""
    calls: list[int] = []
    rss = [100 * MIB]
    clock = [0.0]
    trimmer = MemoryTrimmer(lambda pad: calls.append(pad) or 1, after_freed=8 * MIB, after_growth=16 * MIB,
                            interval=10.0, rss=lambda: rss[0], free=lambda: 0, clock=lambda: clock[0])

    def tick(grow: int, held: int = 5 * MIB) -> bool:
        rss[0] += grow
        clock[0] += 1.0
        return trimmer.tick(held)

    assert not tick(0)  # the first reading is the base
    assert not any(tick(3 * MIB) for _ in range(5))  # 15 MiB more: not yet
    assert tick(2 * MIB) and calls == [0]  # 17 MiB: trimmed; the next growth counts from the RSS after it
    rss[0] = 90 * MIB  # the trim gave pages back
    assert not tick(0) and not tick(15 * MIB)
    assert not tick(2 * MIB)  # 17 MiB above the RSS after the trim, but only 3 s since it
    assert not any(tick(0) for _ in range(6))  # 9 s since the trim
    assert tick(0) and calls == [0, 0]  # 10 s
    rss[0] = 60 * MIB  # freed (a flood ended): the lowest RSS since the trim is the base for the next one
    clock[0] += 60.0
    assert not tick(0) and not tick(15 * MIB) and tick(2 * MIB)
    assert not MemoryTrimmer(None, rss=lambda: 0, free=lambda: 0).tick(0)  # nothing to read: only the held bytes


def test_memory_trimmer_trims_when_the_heap_frees_while_the_rss_stays() -> None:
    """Live data freed during a flood (nonces expiring, say) leaves free pages without the RSS growing."""
    calls: list[int] = []
    free = [1 * MIB]
    clock = [0.0]
    trimmer = MemoryTrimmer(lambda pad: calls.append(pad) or 1, after_growth=4 * MIB, interval=10.0,
                            rss=lambda: 100 * MIB, free=lambda: free[0], clock=lambda: clock[0])
    for grow in (0, 1, 1, 1):
        free[0] += grow * MIB
        clock[0] += 5.0
        assert not trimmer.tick(0)
    free[0] += 1 * MIB
    clock[0] += 5.0
    assert trimmer.tick(0) and calls == [0]  # 4 MiB more free: trimmed (the free bytes stay: glibc counts them)
    clock[0] += 10.0
    assert not trimmer.tick(0)  # measured from the free bytes after the trim: nothing new
    free[0] -= 2 * MIB  # reused by new data
    clock[0] += 10.0
    assert not trimmer.tick(0)
    free[0] += 4 * MIB  # freed again: 4 MiB above the lowest since the trim
    clock[0] += 10.0
    assert trimmer.tick(0) and calls == [0, 0]


def test_the_heap_free_bytes_are_read_on_glibc() -> None:
    import platform

    from leansip.app.memtrim import _libc_free_bytes

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallinfo2 is glibc's")
    free = _libc_free_bytes()
    junk = [bytes(20000) for _ in range(500)]
    kept = junk[1::2]  # every other chunk stays: the freed ones are holes, not the top of the heap
    before = free()
    del junk
    assert free() >= before + 250 * 20000 // 2 and len(kept) == 250


def test_the_real_malloc_trim_is_found_on_glibc() -> None:
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    trimmer = MemoryTrimmer(after_freed=1)
    trimmer.tick(10)
    assert trimmer.tick(0) and trimmer.trims == 1
