"""Binding stores behind :class:`leansip.server.location.LocationService`.

A store keeps bindings keyed by ``(aor, contact_key)`` and indexes their expiry so
that :meth:`LocationStore.expire` costs O(expired), not O(stored).  Stores do not
canonicalize nor compare URIs and do not filter by time on reads: the
:class:`~leansip.server.location.LocationService` facade does that once, for all
stores.  Pick one with :func:`open_store`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from leansip.server.location import Binding

__all__ = ["LocationStore", "open_store"]


class LocationStore(Protocol):
    """What a binding store provides.  All methods may raise the backend's error."""

    #: Seconds between :meth:`flush` calls the server should schedule; 0 means
    #: writes are already durable when ``put``/``remove`` return (nothing to flush).
    flush_interval: float

    def get(self, aor: str, key: str) -> Binding | None:
        """The binding of ``aor`` with contact key ``key``, expired or not."""
        ...

    def lookup(self, aor: str) -> Iterable[Binding]:
        """All stored bindings of ``aor`` in no particular order (expired included)."""
        ...

    def put(self, binding: Binding, key: str) -> None:
        """Insert or replace the binding ``(binding.aor, key)``."""
        ...

    def remove(self, aor: str, key: str) -> Binding | None:
        """Delete one binding and return it, or ``None`` if absent."""
        ...

    def remove_all(self, aor: str) -> list[Binding]:
        """Delete and return every binding of ``aor``."""
        ...

    def expire(self, now: float) -> list[Binding]:
        """Delete and return bindings with ``expires_at <= now``."""
        ...

    def count(self) -> int:
        """Number of stored bindings."""
        ...

    def aors(self) -> Iterable[str]:
        """AORs having at least one stored binding."""
        ...

    def write_ticket(self) -> int:
        """What a reply showing the current bindings must wait for: 0 to send it at once, else the number of
        the latest change, which the shell's committer reports written before it releases the reply."""
        ...

    def flush(self) -> None:
        """Make pending writes durable."""
        ...

    def close(self) -> None:
        """Flush and release resources; the store is unusable afterwards."""
        ...


def open_store(kind: str = "memory", *, now: float = 0.0, **options: Any) -> LocationStore:
    """Build a store from configuration: ``kind`` is ``memory``, ``sqlite`` or ``redis``.

    ``options`` go to the store's constructor (``path``/``durability``/``flush_interval`` for
    SQLite, ``url``/``prefix`` for Redis).  ``now`` lets SQLite drop bindings that
    expired while the server was down.  Raises ``ValueError`` for an unknown kind.
    """
    if kind == "memory":
        from leansip.server.stores.memory import MemoryStore

        return MemoryStore()
    if kind == "sqlite":
        from leansip.server.stores.sqlite import SqliteStore

        return SqliteStore(now=now, **options)
    if kind == "redis":
        from leansip.server.stores.redis import RedisStore

        return RedisStore(**options)
    raise ValueError(f"unknown location store {kind!r} (expected memory, sqlite or redis)")
