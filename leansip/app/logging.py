"""Structured logging: one logfmt line per event, quiet (warning) by default.

Lines look like ``ts=2024-05-01T12:00:00.123Z level=info event=register_ok logger=leansip.server
aor=sip:alice@example.com expires=3600`` so they can be grepped by eye and parsed by machines.
Log through :func:`log_event` with a short snake_case event name and key=value fields; plain
``logger.warning("text")`` calls still work and appear as ``event=log msg="text"``.

A hot path should not pay for formatting a debug line that is dropped: :func:`log_event` checks
``logger.isEnabledFor`` before building anything.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

#: Name of the LogRecord attribute that carries the structured fields.
_FIELDS_ATTR = "leansip_fields"


def logfmt_value(value: Any) -> str:
    """Render one value: bare when safe, else double-quoted with ``\\`` ``"`` and newlines escaped."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = str(value)
    if text and not any(c in text for c in ' ="\\\n\r\t') and text.isprintable():
        return text
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    """Format records as ``ts=... level=... event=... logger=... key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"ts={ts}.{int(record.msecs):03d}Z", f"level={record.levelname.lower()}"]
        fields: dict[str, Any] | None = getattr(record, _FIELDS_ATTR, None)
        if fields is None:
            parts.append("event=log")
            parts.append(f"logger={logfmt_value(record.name)}")
            parts.append(f"msg={logfmt_value(record.getMessage())}")
        else:
            parts.append(f"event={logfmt_value(record.msg)}")
            parts.append(f"logger={logfmt_value(record.name)}")
            parts.extend(f"{key}={logfmt_value(value)}" for key, value in fields.items())
        if record.exc_info:
            parts.append(f"exc={logfmt_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


def parse_level(level: str | int) -> int:
    """Accept ``"warning"``/``"WARNING"``/``30``; raise ValueError naming the allowed names."""
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(_LEVELS)}") from None


def setup_logging(level: str | int = "warning", stream: IO[str] | None = None) -> logging.Handler:
    """Send ``leansip.*`` logs at ``level`` and above to ``stream`` (stderr) as logfmt.

    Safe to call again (e.g. after the config is loaded): it replaces the handler it installed
    before instead of stacking a second one.  Returns the handler so tests can inspect or remove it.
    """
    logger = logging.getLogger("leansip")
    for old in [h for h in logger.handlers if getattr(h, "_leansip", False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    handler._leansip = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(parse_level(level))
    logger.propagate = False
    return handler


def log_event(logger: logging.Logger, event: str, /, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` (a short snake_case name) with ``fields`` as key=value pairs.

    Example: ``log_event(log, "tx_timeout", level=logging.WARNING, call_id=cid, method="INVITE")``.
    """
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS_ATTR: fields}, stacklevel=2)
