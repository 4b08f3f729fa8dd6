"""Structured logging: one line per event, logfmt or JSON, quiet (warning) by default.

Lines look like ``ts=2024-05-01T12:00:00.123Z level=info event=register_ok logger=leansip.server
aor=sip:alice@example.com expires=3600`` so they can be grepped by eye and parsed by machines; with
``--log-format json`` the same fields are one JSON object a line (for log shippers). Log through
:func:`log_event` (``leansip.logevent``) with a short snake_case event name and key=value fields, each value
encoded once. Plain ``logger.warning("text")`` calls still work and appear as ``event=log msg="text"``; a plain
message already written as ``event=name k=v ...`` (the phone's modules) is kept as it is, not quoted again.

A hot path should not pay for formatting a debug line that is dropped: :func:`log_event` checks
``logger.isEnabledFor`` before building anything.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

from leansip.logevent import FIELDS_ATTR as _FIELDS_ATTR
from leansip.logevent import log_event

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

#: The line formats ``--log-format`` accepts.
LOG_FORMATS = ("logfmt", "json")


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


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def record_fields(record: logging.LogRecord) -> tuple[str, dict[str, Any] | str]:
    """(event name, its fields) of a record: the fields :func:`log_event` attached, else the text of a plain
    call. A plain message that already reads ``event=name ...`` gives that name and the text after it."""
    fields: dict[str, Any] | None = getattr(record, _FIELDS_ATTR, None)
    if fields is not None:
        return str(record.msg), fields
    text = record.getMessage()
    if text.startswith("event=") and "\n" not in text:
        name, _, rest = text[6:].partition(" ")
        if name:
            return name, rest
    return "log", {"msg": text}


class LogfmtFormatter(logging.Formatter):
    """Format records as ``ts=... level=... event=... logger=... key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        event, fields = record_fields(record)
        parts = [f"ts={_timestamp(record)}", f"level={record.levelname.lower()}", f"event={logfmt_value(event)}",
                 f"logger={logfmt_value(record.name)}"]
        if isinstance(fields, str):
            if fields:
                parts.append(fields)  # already key=value text
        else:
            parts.extend(f"{key}={logfmt_value(value)}" for key, value in fields.items())
        if record.exc_info:
            parts.append(f"exc={logfmt_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """Format records as one JSON object a line: ``{"ts": ..., "level": ..., "event": ..., "logger": ...,
    fields...}`` (a plain message's text is ``"msg"``; a traceback is ``"exc"``)."""

    def format(self, record: logging.LogRecord) -> str:
        event, fields = record_fields(record)
        doc: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname.lower(), "event": event,
                               "logger": record.name}
        if isinstance(fields, str):
            if fields:
                doc["msg"] = fields
        else:
            for key, value in fields.items():
                doc.setdefault(key, _json_value(value))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, separators=(", ", ": "))


def parse_level(level: str | int) -> int:
    """Accept ``"warning"``/``"WARNING"``/``30``; raise ValueError naming the allowed names."""
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(_LEVELS)}") from None


def setup_logging(level: str | int = "warning", stream: IO[str] | None = None,
                  log_format: str = "logfmt") -> logging.Handler:
    """Send ``leansip.*`` logs at ``level`` and above to ``stream`` (stderr) as logfmt (or ``"json"``).

    Safe to call again (e.g. after the config is loaded): it replaces the handler it installed
    before instead of stacking a second one.  Returns the handler so tests can inspect or remove it.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")
    logger = logging.getLogger("leansip")
    for old in [h for h in logger.handlers if getattr(h, "_leansip", False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    handler._leansip = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(parse_level(level))
    logger.propagate = False
    return handler


__all__ = ["LOG_FORMATS", "JsonFormatter", "LogfmtFormatter", "log_event", "logfmt_value", "parse_level",
           "record_fields", "setup_logging"]
