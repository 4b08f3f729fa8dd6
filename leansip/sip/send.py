"""The one output type of the sans-I/O core: bytes and where to send them.

Every layer (server core, proxy, transactions, user agent) returns lists of :class:`Send`; the asyncio shell
in ``leansip.io`` writes them to the socket or connection named by ``transport`` and ``conn_id``.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Send(NamedTuple):
    """Send ``data`` to ``dest`` over ``transport``; ``conn_id`` names an existing connection to prefer
    (responses go back on the connection the request came on, RFC 3261 18.2.2). ``transaction`` is the
    RFC 3261 transaction that produced it, when one did (the transaction layer sets it, a TU may read it)."""

    data: bytes
    dest: tuple[str, int]
    transport: str = "udp"
    conn_id: str | None = None
    transaction: Any = None
