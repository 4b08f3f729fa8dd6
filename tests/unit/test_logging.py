"""logfmt lines: fields, quoting, quiet default, no handler stacking."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from leansip.app.logging import log_event, logfmt_value, parse_level, setup_logging
from leansip.logevent import log_event as core_log_event


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = setup_logging("info", stream=out)
    yield out
    logging.getLogger("leansip").removeHandler(handler)
    logging.getLogger("leansip").setLevel(logging.NOTSET)
    logging.getLogger("leansip").propagate = True


def test_event_line(stream: io.StringIO) -> None:
    log_event(logging.getLogger("leansip.server"), "register_ok", aor="sip:alice@example.com",
              expires=3600, note='has "quotes" and spaces', ok=True, missing=None)
    line = stream.getvalue()
    assert re.fullmatch(
        r'ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=info event=register_ok logger=leansip.server '
        r'aor=sip:alice@example.com expires=3600 note="has \\"quotes\\" and spaces" ok=true missing=null\n',
        line), line


def test_threshold_and_levels(stream: io.StringIO) -> None:
    log = logging.getLogger("leansip.x")
    log_event(log, "hidden", level=logging.DEBUG)
    log_event(log, "shown", level=logging.WARNING, n=1)
    assert "hidden" not in stream.getvalue()
    assert "level=warning event=shown logger=leansip.x n=1" in stream.getvalue()


def test_plain_log_calls_and_exceptions(stream: io.StringIO) -> None:
    log = logging.getLogger("leansip.y")
    log.warning("disk %s", "full")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith('level=warning event=log logger=leansip.y msg="disk full"')
    assert 'msg=failed exc="Traceback' in lines[1] and "RuntimeError: boom" in lines[1]
    assert len(lines) == 2  # the traceback is escaped into the same line


def test_setup_twice_does_not_duplicate(stream: io.StringIO) -> None:
    again = io.StringIO()
    handler = setup_logging("warning", stream=again)
    try:
        log_event(logging.getLogger("leansip"), "once", level=logging.ERROR)
        assert stream.getvalue() == "" and again.getvalue().count("event=once") == 1
        log_event(logging.getLogger("leansip"), "quiet_by_default")  # info < warning
        assert "quiet_by_default" not in again.getvalue()
    finally:
        logging.getLogger("leansip").removeHandler(handler)


@pytest.mark.parametrize(("value", "text"), [
    ("plain", "plain"), ("", '""'), ("a=b", '"a=b"'), ("line\nbreak", '"line\\nbreak"'),
    (b"bytes", "bytes"), (1.5, "1.5"), (False, "false"), ("back\\slash", '"back\\\\slash"'),
])
def test_logfmt_value(value: object, text: str) -> None:
    assert logfmt_value(value) == text


def test_parse_level() -> None:
    assert parse_level("WARNING") == logging.WARNING and parse_level(10) == 10
    with pytest.raises(ValueError, match="use one of debug, info"):
        parse_level("loud")


def test_a_message_already_in_key_value_form_is_not_quoted_again(stream: io.StringIO) -> None:
    """The double encoding the issue showed: ``event=log ... msg="event=auth_failed src=..."``."""
    logging.getLogger("leansip.phone").info("event=flow_lost reason=%s", "timeout")
    line = stream.getvalue().strip()
    assert line.endswith(" level=info event=flow_lost logger=leansip.phone reason=timeout"), line
    assert "msg=" not in line and line.count("event=") == 1


def test_the_core_logs_through_the_same_fields(stream: io.StringIO) -> None:
    assert core_log_event is log_event  # one function: leansip.logevent, re-exported for the application
    try:
        raise ValueError("bad")
    except ValueError:
        log_event(logging.getLogger("leansip.server"), "flush_error", level=logging.ERROR, exc_info=True, n=2)
    line = stream.getvalue()
    assert "level=error event=flush_error logger=leansip.server n=2 exc=\"Traceback" in line
    assert "ValueError: bad" in line and line.count("\n") == 1


def test_json_lines_carry_the_same_fields() -> None:
    out = io.StringIO()
    handler = setup_logging("info", stream=out, log_format="json")
    try:
        log = logging.getLogger("leansip.server")
        log_event(log, "auth_failed", level=logging.WARNING, user='ev"e', src="192.0.2.1:5060", n=3, ok=None,
                  raw=b"\xff", path=("a", 1))
        log.warning("disk %s", "full")
        logging.getLogger("leansip.phone").info("event=flow_lost reason=timeout")
    finally:
        logging.getLogger("leansip").removeHandler(handler)
        logging.getLogger("leansip").setLevel(logging.NOTSET)
        logging.getLogger("leansip").propagate = True
    first, plain, legacy = (json.loads(line) for line in out.getvalue().splitlines())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.pop("ts"))
    assert first == {"level": "warning", "event": "auth_failed", "logger": "leansip.server", "user": 'ev"e',
                     "src": "192.0.2.1:5060", "n": 3, "ok": None, "raw": "\\xff", "path": ["a", 1]}
    assert (plain["event"], plain["msg"]) == ("log", "disk full")
    assert (legacy["event"], legacy["msg"]) == ("flow_lost", "reason=timeout")


def test_unknown_log_format_is_refused_before_anything_changes() -> None:
    before = list(logging.getLogger("leansip").handlers)
    with pytest.raises(ValueError, match="use one of logfmt, json"):
        setup_logging("info", log_format="xml")
    assert logging.getLogger("leansip").handlers == before
