"""One way every layer logs an event: a short snake_case name and key=value fields, never a formatted string.

The fields ride on the log record (``record.leansip_fields``) and the handler the application installs
(``leansip.app.logging``) writes them once, as logfmt or JSON. A message formatted into text first (``"event=x
reason=%r"``) would be quoted a second time as ``msg="..."`` and could not be read back by a machine.

This module has no dependencies so the sans-I/O core can log through it without importing the application. A
call costs one ``isEnabledFor`` check when its level is off, so the straight path may keep debug events.
"""

from __future__ import annotations

import logging
from typing import Any, Final

#: Name of the LogRecord attribute that carries the structured fields.
FIELDS_ATTR: Final = "leansip_fields"


def log_event(logger: logging.Logger, event: str, /, level: int = logging.INFO, exc_info: bool = False,
              **fields: Any) -> None:
    """Log ``event`` (a short snake_case name) with ``fields`` as key=value pairs.

    Example: ``log_event(log, "tx_timeout", level=logging.WARNING, call_id=cid, method="INVITE")``.
    ``exc_info=True`` adds the exception being handled (as one escaped ``exc=`` field).
    """
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={FIELDS_ATTR: fields}, stacklevel=2, exc_info=exc_info)
