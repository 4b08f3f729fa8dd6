"""Location service: where an address-of-record can currently be reached.

Theory of operation
-------------------
This module is *mechanism apart from storage* (Kamailio ``usrloc``): the registrar
(RFC 3261 10.3) decides *whether* a REGISTER adds, refreshes or removes a contact and
then calls :class:`LocationService`; the proxy calls :meth:`LocationService.lookup`.
Where bindings live is a pluggable :class:`~leansip.server.stores.LocationStore`:

* :class:`~leansip.server.stores.memory.MemoryStore` -- one process, the hot path;
* :class:`~leansip.server.stores.sqlite.SqliteStore` -- memory reads plus batched
  writes to SQLite so a restart (even ``kill -9``) keeps registrations; durable by
  default: a REGISTER's 200 OK waits for its commit (:meth:`LocationService.write_ticket`);
* :class:`~leansip.server.stores.redis.RedisStore` -- shared by a cluster of nodes, each
  with its own replica (reads never leave the process; Redis carries the changes).

Time: every ``now`` and ``expires_at`` is wall-clock Unix seconds (``time.time()``),
never a monotonic clock, because bindings are persisted across restarts and shared
between machines.  Nothing here reads the clock; callers pass ``now``.

Bindings are treated as immutable once stored: to refresh one, ``put`` a new
:class:`Binding` (or ``dataclasses.replace`` of the old one).  Stores index expiry
times at ``put`` time.

Contact identity: RFC 3261 10.3 step 6 compares a REGISTER's contacts with the stored
ones by URI comparison (19.1.4).  Stores key bindings by a *contact key*, a string
that is equal for equivalent URIs.  :func:`contact_key` is a simple normalization; the
registrar may pass its own function as ``LocationService(key=...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from leansip.server.stores import LocationStore

if TYPE_CHECKING:
    from leansip.server.stores.memory import MemoryStore

__all__ = [
    "TRANSPORTS",
    "Binding",
    "LocationService",
    "binding_from_dict",
    "binding_to_dict",
    "canonical_aor",
    "contact_key",
]

#: Transports a binding may have been registered over (lowercase, as in Via).
TRANSPORTS: Final = frozenset({"udp", "tcp", "tls", "ws", "wss", "sctp"})
#: the Path of a binding registered without one, shared by all of them (bindings are immutable once stored:
#: an empty list each was 56 bytes a binding, 5 MB at 100,000)
_NO_PATH: Final[list[str]] = []


@dataclass(slots=True, kw_only=True, eq=False)
class Binding:
    """One contact registered for an address-of-record (RFC 3261 10.3).

    ``aor`` is canonical ``user@domain`` with a lowercase domain (see
    :func:`canonical_aor`); ``contact`` is the Contact URI exactly as registered,
    because that is what goes into a Request-URI when the proxy forks to it.
    ``source``/``transport``/``conn_id``/``received``/``path`` are what a proxy needs
    to reach a UA behind NAT or over a connection-oriented transport (RFC 5626,
    RFC 3327).  ``call_id``/``cseq`` let the registrar reject out-of-order
    REGISTERs (RFC 3261 10.3 step 7).  Keyword-only so that adding a field never
    shifts another one.  Compared by identity (``eq=False``): a stored binding is one record, and the
    memory store's expiry buckets key on it.
    """

    aor: str
    contact: str
    q: float
    expires_at: float
    call_id: str
    cseq: int
    source: tuple[str, int]
    transport: str
    user_agent: str
    registered_at: float
    instance: str | None
    reg_id: int | None
    path: list[str]
    received: str | None
    conn_id: str | None
    #: the contact's comparison key, set by the memory store that holds the binding (not part of the record:
    #: the store derives it from ``contact``; kept here so an AOR with one binding is that binding alone)
    key: str = field(default="", init=False, repr=False)

    # explicit __init__: mypyc compiles it (a generated dataclass __init__ stays interpreted)
    # (required keywords first: mypyc's signature text rejects a required one after a defaulted one)
    def __init__(self, *, aor: str, contact: str, expires_at: float, q: float = 1.0, call_id: str = "",
                 cseq: int = 0, source: tuple[str, int] = ("", 0), transport: str = "udp", user_agent: str = "",
                 registered_at: float = 0.0, instance: str | None = None, reg_id: int | None = None,
                 path: list[str] | None = None, received: str | None = None, conn_id: str | None = None) -> None:
        self.aor = aor
        self.contact = contact
        self.q = q
        self.expires_at = expires_at
        self.call_id = call_id
        self.cseq = cseq
        self.source = source
        self.transport = transport
        self.user_agent = user_agent
        self.registered_at = registered_at
        self.instance = instance
        self.reg_id = reg_id
        self.path = _NO_PATH if path is None else path
        self.received = received
        self.conn_id = conn_id
        self.key = ""

    def expires_in(self, now: float) -> int:
        """Seconds left, rounded down and never negative: what a 200 OK's
        Contact ``expires`` parameter reports (RFC 3261 10.3 step 8)."""
        left = int(self.expires_at - now)
        return left if left > 0 else 0


def binding_to_dict(b: Binding) -> dict[str, Any]:
    """A JSON-ready dict of ``b``; the inverse of :func:`binding_from_dict`.

    Explicit rather than ``dataclasses.asdict`` so the wire format of the Redis
    store does not change silently when a field is added.
    """
    return {
        "aor": b.aor,
        "contact": b.contact,
        "q": b.q,
        "expires_at": b.expires_at,
        "call_id": b.call_id,
        "cseq": b.cseq,
        "source": [b.source[0], b.source[1]],
        "transport": b.transport,
        "user_agent": b.user_agent,
        "registered_at": b.registered_at,
        "instance": b.instance,
        "reg_id": b.reg_id,
        "path": list(b.path),
        "received": b.received,
        "conn_id": b.conn_id,
    }


def binding_from_dict(d: dict[str, Any]) -> Binding:
    """Rebuild a :class:`Binding` from :func:`binding_to_dict` output.

    Raises ``KeyError``/``TypeError``/``ValueError`` on malformed input; stores
    treat that as corrupt data, not as a peer error.
    """
    src = d.get("source") or ("", 0)
    reg_id = d.get("reg_id")
    return Binding(
        aor=str(d["aor"]),
        contact=str(d["contact"]),
        q=float(d.get("q", 1.0)),
        expires_at=float(d["expires_at"]),
        call_id=str(d.get("call_id", "")),
        cseq=int(d.get("cseq", 0)),
        source=(str(src[0]), int(src[1])),
        transport=str(d.get("transport", "udp")),
        user_agent=str(d.get("user_agent", "")),
        registered_at=float(d.get("registered_at", 0.0)),
        instance=d.get("instance"),
        reg_id=None if reg_id is None else int(reg_id),
        path=[str(p) for p in d.get("path") or ()],
        received=d.get("received"),
        conn_id=d.get("conn_id"),
    )


def canonical_aor(aor: str) -> str:
    """``user@Domain`` -> ``user@domain``.

    The user part stays case-sensitive (RFC 3261 19.1.4) while the host is not,
    so only the part after the last ``@`` is lowercased.  No scheme is expected.
    """
    if "@" not in aor:
        return aor  # a bare user name (the registrar's default, use_domain off): case-sensitive, as is
    user, at, host = aor.rpartition("@")
    return user + at + host.lower()


def _strip_name_addr(value: str) -> str:
    """Return the URI inside a name-addr, or ``value`` if it is a bare URI.

    Skips a quoted display name first, since it may itself contain ``<`` or ``>``.
    """
    s = value.strip()
    start = 0
    if s.startswith('"'):
        i = 1
        while i < len(s):
            c = s[i]
            if c == "\\":
                i += 2
                continue
            if c == '"':
                break
            i += 1
        start = i + 1
    lt = s.find("<", start)
    if lt < 0:
        return s[start:].strip()
    gt = s.find(">", lt + 1)
    return s[lt + 1 : gt if gt >= 0 else len(s)].strip()


def contact_key(uri: str) -> str:
    """A simple normalized key for comparing contact URIs of one AOR.

    Approximates RFC 3261 19.1.4: the scheme, host, port, parameters and headers
    compare case-insensitively, the userinfo case-sensitively, and the order of
    parameters does not matter.  Display name and angle brackets are dropped.
    It does not unescape ``%XX`` nor apply the "parameter present on one side
    only" rules; a registrar that needs those passes its own key function.
    """
    u = _strip_name_addr(uri)
    scheme, colon, rest = u.partition(":")
    if not colon:
        return u.lower()
    userinfo, at, hostpart = rest.rpartition("@")
    hostpart, q, headers = hostpart.partition("?")
    hostport, semi, params = hostpart.partition(";")
    out = scheme.lower() + ":" + userinfo + at + hostport.lower()
    if semi:
        plist = sorted(p for p in params.lower().split(";") if p)
        if plist:
            out += ";" + ";".join(plist)
    if q and headers:
        out += "?" + "&".join(sorted(headers.lower().split("&")))
    return out


def _order(b: Binding) -> tuple[float, float]:
    # Highest q first, then the most recently registered (RFC 3261 16.6 forks by q;
    # ties go to the freshest registration, as Kamailio usrloc does).
    return (-b.q, -b.registered_at)


class LocationService:
    """The registrar's and proxy's view of bindings, over any :class:`LocationStore`.

    Call :meth:`expire` from the server's timer (about once a second) and
    :meth:`flush` from its flush timer (see ``store.flush_interval``) and on
    shutdown, then :meth:`close`.  No store reads or writes its backend here (the
    SQLite and Redis stores queue changes for the shell's writer), so nothing on
    the straight path waits for a disk or a network.
    """

    __slots__ = ("store", "key", "_memory", "_reads", "_plain_key")

    def __init__(self, store: LocationStore | None = None, *, key: Callable[[str], str] = contact_key):
        from leansip.server.stores.memory import MemoryStore

        if store is None:
            store = MemoryStore()
        self.store = store
        #: contact URI -> comparison key (RFC 3261 10.3 step 6).
        self.key = key
        # The registrar's calls go straight to a MemoryStore when there is one: compiled, a call on a known
        # class is a direct call, one through the store protocol (or the key callable) is looked up by name
        # with its arguments boxed (five such calls in a REGISTER). ``_memory``: the store itself
        # when it is a MemoryStore (reads and writes); ``_reads``: the memory that answers its reads (that
        # store, or the replica of a SqliteStore or RedisStore, which never read their backend).
        self._memory: MemoryStore | None = store if type(store) is MemoryStore else None
        reads = getattr(store, "memory", None) if self._memory is None else self._memory
        self._reads: MemoryStore | None = reads if type(reads) is MemoryStore else None
        self._plain_key = key is contact_key

    def _key(self, contact: str) -> str:
        return contact_key(contact) if self._plain_key else self.key(contact)

    # -- reads ---------------------------------------------------------------
    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Unexpired bindings of ``aor``, best first (q descending, then newest).

        Expired bindings not yet reaped by :meth:`expire` are hidden, so a lookup
        never returns a contact whose registration has lapsed.
        """
        aor = canonical_aor(aor)
        reads = self._reads
        stored = reads.lookup(aor) if reads is not None else self.store.lookup(aor)
        found = [b for b in stored if b.expires_at > now]
        if len(found) > 1:
            found.sort(key=_order)
        return found

    def get(self, aor: str, contact: str) -> Binding | None:
        """The stored binding of ``aor`` equivalent to ``contact``, expired or not
        (the registrar needs the old Call-ID/CSeq even of a lapsed binding)."""
        aor, key = canonical_aor(aor), self._key(contact)
        reads = self._reads
        return reads.get(aor, key) if reads is not None else self.store.get(aor, key)

    def count(self) -> int:
        """Number of stored bindings (including expired ones not yet reaped)."""
        return self.store.count()

    def aors(self) -> list[str]:
        """All AORs with at least one stored binding, sorted (admin view)."""
        return sorted(self.store.aors())

    def all_bindings(self, now: float) -> list[Binding]:
        """Every unexpired binding, grouped by AOR, for the admin view."""
        out: list[Binding] = []
        for aor in self.aors():
            out.extend(self.lookup(aor, now))
        return out

    # -- writes --------------------------------------------------------------
    def put(self, binding: Binding) -> None:
        """Add or replace the binding with the same (aor, contact key).

        ``binding.aor`` is canonicalized in place.  Do not mutate a binding after
        storing it; put a new one instead (stores index its expiry now).
        """
        binding.aor = canonical_aor(binding.aor)
        key = self._key(binding.contact)
        memory = self._memory
        if memory is not None:
            memory.put(binding, key)
        else:
            self.store.put(binding, key)

    def remove(self, aor: str, contact: str) -> Binding | None:
        """Remove one binding (``expires=0`` on one contact); return it if present."""
        return self.store.remove(canonical_aor(aor), self._key(contact))

    def remove_all(self, aor: str) -> list[Binding]:
        """Remove every binding of ``aor`` (``Contact: *``, RFC 3261 10.3 step 6)."""
        return self.store.remove_all(canonical_aor(aor))

    def expire(self, now: float) -> list[Binding]:
        """Reap bindings with ``expires_at <= now`` and return them.

        Cost is proportional to the number that expire, so it is cheap to call
        every second; the caller may log them or drop NAT keepalives for them.
        """
        return self.store.expire(now)

    def write_ticket(self) -> int:
        """0 when a reply listing the current bindings may go out now; else the change number it must wait
        for (a durable store: the shell holds the reply until that change is committed)."""
        return 0 if self._memory is not None else self.store.write_ticket()

    def flush(self) -> None:
        """Persist pending writes (no-op for stores without persistence)."""
        self.store.flush()

    def close(self) -> None:
        """Flush and release the store."""
        self.store.close()
