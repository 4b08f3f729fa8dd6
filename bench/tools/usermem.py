#!/usr/bin/env python3
"""What a registered user costs in memory, and where it goes (issue 23's soak holds 100,000 of them).

    python3 bench/tools/usermem.py [--users 100000] [--location sqlite|memory] [--parts]

In process, no sockets: builds the server core as ``leansip serve --mode proxy --auth`` does
(``leansip.app.serve.build_core``), loads a users file of ``--users`` password users, and registers each one with
digest (REGISTER, its 401, the REGISTER with credentials, its 200), as bench/soak.py's users do. Prints the RSS
after start-up, after loading the users and after the registrations, per user.

``--parts`` (slower: tracemalloc) then empties the structures one at a time and prints what each held, in
traced bytes: reply cache, nonce counter, issued nonces, users' HA1 memo, parse caches, bindings, users. The
RSS is more than the traced bytes (the allocators' own overhead and the free space between live objects).
Run it against two builds to see what a change of data layout saves.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import re
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from leansip.app.config import Config  # noqa: E402
from leansip.app.serve import build_core  # noqa: E402
from leansip.server.users import load_users  # noqa: E402
from leansip.sip.digest import build_authorization, choose_challenge  # noqa: E402

HERE = "127.0.0.1:5060"
SOURCE = ("127.0.0.1", 40000)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def register(n: int, cseq: int, authorization: str | None = None) -> bytes:
    lines = [f"REGISTER sip:{HERE} SIP/2.0", f"Via: SIP/2.0/UDP 127.0.0.1:40000;rport;branch=z9hG4bK-r{n}c{cseq}",
             "Max-Forwards: 70", f"From: <sip:user{n}@{HERE}>;tag=r{n}", f"To: <sip:user{n}@{HERE}>",
             f"Call-ID: reg-{n}@soak", f"CSeq: {cseq} REGISTER", f"Contact: <sip:user{n}@127.0.0.1:40000>",
             "Expires: 3600", "User-Agent: leansip-soak"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--location", default="sqlite", choices=["sqlite", "memory"])
    ap.add_argument("--parts", action="store_true", help="what each structure holds (tracemalloc)")
    a = ap.parse_args()
    n_users = a.users
    work = Path(tempfile.mkdtemp(prefix="leansip-usermem-"))
    (work / "users.txt").write_text("".join(f"user{i}:pw{i}\n" for i in range(n_users)))
    if a.parts:
        tracemalloc.start(1)
    start = rss_mib()
    config = dataclasses.replace(Config(), mode="proxy", auth=True, realm="soak", location=a.location,
                                 db=str(work / "soak.db"), durability="relaxed")
    users = load_users(work / "users.txt")
    gc.collect()
    loaded = rss_mib()
    now = time.time()
    core = build_core(config, users, now)
    ok = 0
    for n in range(n_users):
        challenge = core.receive(register(n, 1), SOURCE, "udp", now)[0].data.decode()
        offered = re.findall(r"\r\nWWW-Authenticate:\s*([^\r\n]+)", challenge)
        credentials = build_authorization(choose_challenge(offered), "REGISTER", f"sip:{HERE}", f"user{n}",
                                          f"pw{n}")
        ok += core.receive(register(n, 2, credentials), SOURCE, "udp", now)[0].data.startswith(b"SIP/2.0 200")
        if n % 1000 == 999:
            core.location.flush()
    core.location.flush()
    gc.collect()
    registered = rss_mib()
    per_user_load = (loaded - start) * 2**20 / n_users
    per_user_reg = (registered - loaded) * 2**20 / n_users
    print(f"users={n_users} registered={ok} location={a.location} rss_start_mib={start:.1f} "
          f"rss_users_mib={loaded:.1f} ({per_user_load:.0f} B/user) rss_registered_mib={registered:.1f} "
          f"({per_user_reg:.0f} B/user)")
    if a.parts:
        parts(core, users, n_users)
    return 0 if ok == n_users else 1


def parts(core: object, users: object, n_users: int) -> None:
    """Empty each structure in turn; what the traced bytes fell by is what it held."""
    from leansip.server import registrar
    from leansip.sip import message_parse, uri

    c: object = core
    structures: list[tuple[str, Callable[[], object]]] = [
        ("reply cache", lambda: c._reply_cache._entries.clear()),  # type: ignore[attr-defined]
        ("nonce counter", lambda: (c.services.authenticator.nonces._entries.clear(),  # type: ignore[attr-defined]
                                   c.services.authenticator.nonces._order.clear())),  # type: ignore[attr-defined]
        ("issued nonces", lambda: c.services.authenticator._issued.clear()),  # type: ignore[attr-defined]
        ("HA1 memo", lambda: users._forget_ha1s()),  # type: ignore[attr-defined]
        ("parse caches", lambda: (uri._URI_CACHE.clear(), uri._NAME_ADDR_CACHE.clear(), uri._VIA_CACHE.clear(),
                                  message_parse._NAME_CACHE.clear(), registrar._CONTACT_KEYS.clear())),
        ("bindings", lambda: c.location.store.memory.close() if hasattr(c.location.store, "memory")  # type: ignore[attr-defined]
         else c.location.store.close()),  # type: ignore[attr-defined]
        ("users", lambda: users._users.clear()),  # type: ignore[attr-defined]
    ]

    def traced() -> int:
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    before = traced()
    print(f"traced_mib={before / 2**20:.1f}")
    for name, empty in structures:
        try:
            empty()
        except (AttributeError, TypeError) as exc:  # a layout this tool does not know (an older build)
            print(f"  {name:14s} (not measured: {exc})")
            continue
        after = traced()
        print(f"  {name:14s} {(before - after) / 2**20:7.1f} MiB  {(before - after) / n_users:6.0f} B/user")
        before = after
    print(f"  {'the rest':14s} {before / 2**20:7.1f} MiB")


if __name__ == "__main__":
    raise SystemExit(main())
