"""``leansip status``: ask a running server's admin endpoint how it is doing, and print it for a person.

Uses only the standard library (urllib), so the command works wherever the package imports, even without the
admin server's own dependencies.  Reads ``/api/status``, ``/api/calls`` and ``/api/bindings``; ``--json`` prints
them as one JSON object for scripts.  Any failure to get an answer is one ``leansip: error: ...`` line on stderr and exit status 1
(the same convention as the rest of the CLI), because the usual cause -- no server there, wrong port, wrong
token -- needs one sentence, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

TIMEOUT = 5.0


class StatusError(Exception):
    """The admin endpoint could not be reached or did not answer as expected; ``str()`` is the whole message."""


def _base(url: str) -> str:
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def fetch(base: str, path: str, token: str | None) -> Any:
    """GET ``base + path`` as JSON.  Raises :class:`StatusError` with a one-line reason."""
    request = urllib.request.Request(base + path, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310 - URL given by the user
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            hint = "wrong admin token" if token else "the admin endpoint needs a token (--admin-token)"
            raise StatusError(f"{base}: {hint}") from None
        raise StatusError(f"{base}{path}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
        raise StatusError(f"cannot reach the admin endpoint {base}: {reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, malformed URL
        raise StatusError(f"cannot reach the admin endpoint {base}: {exc}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise StatusError(f"{base}{path}: the answer is not JSON (is this a leansip admin endpoint?)") from None


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    out = [line, "  ".join("-" * w for w in widths)]
    for row in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return out


def _counts(values: dict[str, int]) -> str:
    if not values:
        return "none"
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items(), key=lambda kv: (-kv[1], kv[0])))


def _store(store: dict[str, Any]) -> str:
    """The location store's writer in a few words (see Runtime.store_state)."""
    if "redis" in store:
        link = "connected" if store.get("connected") else f"UNREACHABLE (outages: {store.get('outages', 0)})"
        return f", redis {link}, queue {store.get('pending', 0)}/{store.get('queue_limit', '?')}"
    if store.get("durability") == "durable":
        failing = ", COMMITS FAILING" if store.get("failing") else ""
        return f", durable: {store.get('batches', 0)} commits, {store.get('held', 0)} replies waiting{failing}"
    if store.get("durability"):
        return f", {store['durability']}: {store.get('pending', 0)} changes pending"
    return ""


def _calls_lines(calls: dict[str, Any] | None) -> list[str]:
    if calls is None:
        return []
    if not calls.get("tracking", True):
        return [f"calls: not tracked ({calls.get('reason', '')})", ""]
    listed = calls.get("calls", [])
    if not listed:
        return ["calls: none in progress", ""]
    rows = [[c.get("caller", ""), c.get("callee", ""), c.get("state", ""),
             time.strftime("%H:%M:%S", time.localtime(c.get("start") or 0)),
             _duration(c.get("duration", 0)) if c.get("answer") else "-",
             f"{c.get('caller_transport', '').upper()} {c.get('caller_addr', '')}",
             f"{c.get('callee_transport', '').upper()} {c.get('callee_addr', '')}" if c.get("callee_addr") else "-"]
            for c in listed]
    lines = [f"calls in progress ({calls.get('calls_in_progress', len(listed))})"]
    lines.extend("  " + row for row in _table(["CALLER", "CALLEE", "STATE", "STARTED", "TALKING", "CALLER LEG",
                                               "CALLEE LEG"], rows))
    lines.append("")
    return lines


def render(status: dict[str, Any], bindings: list[dict[str, Any]], calls: dict[str, Any] | None = None) -> str:
    """The human-readable report (what ``leansip status`` prints without ``--json``)."""
    mode = status.get("mode", "?")
    if mode == "proxy":
        mode += " (stateful)" if status.get("stateful") else " (stateless)"
    auth = f"on, realm {status.get('realm')}" if status.get("auth") else "off"
    listen = ", ".join(f"{t['transport']}:{t['host']}:{t['port']}" for t in status.get("transports", []))
    stats = status.get("stats", {})
    lines = [
        f"{status.get('server') or 'leansip'}  up {_duration(status.get('uptime', 0))}",
        f"  mode:          {mode}",
        f"  auth:          {auth}",
        f"  listening:     {listen or '-'}",
        f"  location:      {status.get('location', '-')}{_store(status.get('store') or {})}",
        f"  users:         {status.get('users', 0)}",
        f"  bindings:      {status.get('bindings', 0)}",
        f"  transactions:  {status.get('transactions', 0)}   calls: {status.get('calls', 0)}   "
        f"connections: {status.get('connections', 0)}",
        "",
        "counters",
        f"  requests:      {_counts(stats.get('requests', {}))}",
        f"  responses:     {_counts(stats.get('responses', {}))}",
        f"  auth failures: {stats.get('auth_failures', 0)}   blocked: {stats.get('blocked', 0)}   "
        f"retransmissions: {stats.get('retransmissions', 0)}",
        "",
    ]
    lines.extend(_calls_lines(calls))
    if bindings:
        lines.append(f"bindings ({len(bindings)})")
        rows = [[b.get("user", ""), b.get("contact", ""), b.get("source", ""), b.get("transport", "").upper(),
                 b.get("user_agent", "") or "-", _duration(b.get("expires_in", 0))] for b in bindings]
        lines.extend("  " + row for row in _table(["USER", "CONTACT", "SOURCE", "TRANSPORT", "USER-AGENT",
                                                   "EXPIRES IN"], rows))
    else:
        lines.append("bindings: none")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Entry point used by ``leansip.app.cli`` (Namespace with .admin, .admin_token, .json); returns the status."""
    base = _base(args.admin)
    try:
        status = fetch(base, "/api/status", args.admin_token)
        calls = fetch(base, "/api/calls", args.admin_token)
        bindings = fetch(base, "/api/bindings", args.admin_token)
    except StatusError as exc:
        sys.stderr.write(f"leansip: error: {exc}\n")
        return 1
    if args.json:
        json.dump({"status": status, "calls": calls, "bindings": bindings}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(status, bindings, calls))
    return 0


__all__ = ["StatusError", "fetch", "main", "render"]
