"""The one output type of the sans-I/O core: bytes and where to send them.

Every layer (server core, proxy, transactions, user agent) returns lists of :class:`Send`; the asyncio shell
in ``leansip.io`` writes them to the socket or connection named by ``transport`` and ``conn_id``.
"""

from __future__ import annotations

from typing import Any


class Send:
    """Send ``data`` to ``dest`` over ``transport``; ``conn_id`` names an existing connection to prefer
    (responses go back on the connection the request came on, RFC 3261 18.2.2). ``transaction`` is the
    RFC 3261 transaction that produced it, when one did (the transaction layer sets it, a TU may read it).
    ``after_commit``, when not 0, holds the message until the location store's change of that number is
    committed (a REGISTER's 200 OK under a durable store; the shell's group committer releases it).

    A plain class with slots rather than a NamedTuple: compiled, constructing one is a direct call, where a
    NamedTuple's ``__new__`` is Python source run by the interpreter (~2,000 instructions, once per message
    the server sends). Compared by value, like the tuple it was."""

    __slots__ = ("data", "dest", "transport", "conn_id", "transaction", "after_commit")

    def __init__(self, data: bytes, dest: tuple[str, int], transport: str = "udp", conn_id: str | None = None,
                 transaction: Any = None) -> None:
        self.data = data
        self.dest = dest
        self.transport = transport
        self.conn_id = conn_id
        self.transaction = transaction
        self.after_commit = 0

    def _fields(self) -> tuple[bytes, tuple[str, int], str, str | None, Any]:
        return (self.data, self.dest, self.transport, self.conn_id, self.transaction)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Send):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (f"Send(data={self.data!r}, dest={self.dest!r}, transport={self.transport!r}, "
                f"conn_id={self.conn_id!r}, transaction={self.transaction!r})")
