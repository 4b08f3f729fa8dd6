"""Route scripts: the routing logic of a leansip server, in plain Python.

A route script is a Python file that makes a :class:`Routes` and registers handlers on it::

    from leansip.routes import Routes

    routes = Routes()

    @routes.request("INVITE", "MESSAGE")
    def call(req, ctx):
        if not ctx.authenticate():            # 407 with a challenge, recorded by authenticate itself
            return
        if req.ruri.user.startswith("+"):
            return ctx.reply(403, "No PSTN here")
        ctx.relay(ctx.lookup(), timeout=20, on_failure=voicemail)

    def voicemail(req, ctx, response):        # every branch failed: busy, no answer (408), offline (480)
        ctx.relay("sip:vm@127.0.0.1:5090")

``leansip serve --routes FILE.py`` (or ``routes = "FILE.py"`` in the config) runs it: the server hands each new
request to the handler for its method, inline on the request's path. A handler reads the request and records a
decision on ``ctx`` (:class:`leansip.server.context.RequestContext`: ``reply``, ``relay``, ``drop``; and the
questions ``lookup``, ``authenticate``); the server carries the decision out after the handler returns. Nothing
is sent from inside a handler, so the same script runs in a test without sockets (:mod:`leansip.testing`).

The server keeps from the script what Kamailio's default configuration does before its routing logic:
retransmissions, the ACK of a non-2xx, CANCEL of a running call, and in-dialog requests that follow our own
Record-Route (``Routes(in_dialog=True)`` shows those to the script too). REGISTER goes to the registrar;
``@routes.register`` sees it first and may refuse it.

Errors in a script never take the server down: an exception in a handler answers 500, is logged once per place
(file:line in the script) and counted (``script_errors`` on ``/metrics``). A script that cannot be loaded
stops ``leansip serve`` with one line naming its file and line (:class:`RouteScriptError`).
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Final, TypeVar

from leansip.logevent import log_event
from leansip.server.context import UNDECIDED, FailureHandler, RequestContext
from leansip.server.handler import ResponseContext
from leansip.sip.message import Request, Response

__all__ = ["RequestContext", "ResponseContext", "RouteScriptError", "Routes", "load_routes"]

log = logging.getLogger("leansip.routes")

RequestHandler = Callable[[Request, RequestContext], object]
ResponseHandler = Callable[[Response, ResponseContext], object]
_F = TypeVar("_F", bound=Callable[..., object])

#: distinct script errors logged with their traceback; past this, only counted (a script failing in a new
#: place on every request must not fill the log or memory)
MAX_LOGGED_ERRORS: Final = 1000
#: methods the core never gives a script's request handlers (REGISTER: @routes.register)
_NOT_ROUTED: Final = frozenset({"REGISTER"})

_LEANSIP_DIR: Final = str(Path(__file__).resolve().parent)


class RouteScriptError(Exception):
    """A route script cannot be used: ``str()`` is one line, ``file:line: what``."""


class Routes:
    """The handlers of a route script. Make one at module level and decorate functions with it.

    ``in_dialog=True``: in-dialog requests that come back along our Record-Route (BYE, re-INVITE, ACK of a
    2xx...) go to the handlers too, instead of being relayed along their Route by the server."""

    def __init__(self, *, in_dialog: bool = False) -> None:
        self._by_method: dict[str, RequestHandler] = {}
        self._any: RequestHandler | None = None
        self._response: ResponseHandler | None = None
        self._register: RequestHandler | None = None
        self.wants_in_dialog = in_dialog
        self.wants_register = False
        self.wants_responses = False
        self._logged: set[tuple[str, str]] = set()
        frame = sys._getframe(1)
        #: where the script made this object (file, line): named when it turns out to have no handler
        self.defined_at = (frame.f_code.co_filename, frame.f_lineno)

    # ------------------------------------------------------------------ registering handlers
    def request(self, *methods: str) -> Callable[[_F], _F]:
        """Decorator: the function handles new requests of these methods (``"*"``: every method without
        a handler of its own). ``fn(req, ctx)`` records a decision on ``ctx``.

        ACK and CANCEL that the server does not handle itself (with stateless relaying) go to the INVITE
        handler unless they have their own, so they follow their INVITE."""
        if not methods:
            raise TypeError("routes.request() needs at least one method, e.g. routes.request(\"INVITE\")")
        names = []
        for m in methods:
            if not isinstance(m, str) or not m or (m != "*" and not m.isalpha()):
                raise ValueError(f"not a SIP method: {m!r}")
            name = m.upper()
            if name in _NOT_ROUTED:
                raise ValueError("REGISTER goes to the registrar: use @routes.register to see it first")
            names.append(name)

        def add(fn: _F) -> _F:
            for name in names:
                if name == "*":
                    self._any = fn
                else:
                    self._by_method[name] = fn
            return fn

        return add

    def response(self, fn: _F) -> _F:
        """Decorator: ``fn(resp, ctx)`` sees every response coming back from a relayed request before it is
        passed on; ``ctx.drop()`` (provisional responses only), ``ctx.remove_header(name)``,
        ``ctx.add_header(name, value)``."""
        self._response = fn
        self.wants_responses = True
        return fn

    def register(self, fn: _F) -> _F:
        """Decorator: ``fn(req, ctx)`` sees each REGISTER after authentication (``ctx.user``) and before the
        registrar saves it: ``ctx.reply(status)`` refuses it, header edits change what is saved, nothing
        lets it through."""
        self._register = fn
        self.wants_register = True
        return fn

    @property
    def methods(self) -> list[str]:
        """The methods with a handler of their own, sorted."""
        return sorted(self._by_method)

    @property
    def empty(self) -> bool:
        return not self._by_method and self._any is None and self._register is None

    # ------------------------------------------------------------------ the Handler protocol (the server)
    def on_request(self, req: Request, ctx: RequestContext) -> None:
        """Called by the server for each new request: the handler for its method decides."""
        method = req.method
        fn = self._by_method.get(method)
        if fn is None and (method == "ACK" or method == "CANCEL"):
            fn = self._by_method.get("INVITE")
        if fn is None:
            fn = self._any
        if fn is None:
            allow = ", ".join(["REGISTER", *self.methods])
            ctx.reply(405, None, [("Allow", allow)])
            return
        self._call(fn, ctx, req, ctx)

    def on_register(self, req: Request, ctx: RequestContext) -> None:
        fn = self._register
        if fn is not None:
            self._call(fn, ctx, req, ctx)

    def on_response(self, resp: Response, ctx: ResponseContext) -> None:
        fn = self._response
        if fn is None:
            return
        try:
            fn(resp, ctx)
        except Exception as exc:  # noqa: BLE001 - a script's error: logged, counted; the response passes
            self._report(exc, ctx.services.stats)

    def on_failure(self, fn: FailureHandler, req: Request, ctx: RequestContext, resp: Response) -> None:
        self._call(fn, ctx, req, ctx, resp)

    def _call(self, fn: Callable[..., object], ctx: RequestContext, *args: object) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - a script's error: 500 for this request, logged once, counted
            self._report(exc, ctx.services.stats)
            ctx.action = UNDECIDED
            ctx.response = None
            ctx.reply(500, "Route Script Error")

    def _report(self, exc: BaseException, stats: Any) -> None:
        """Count the error; log it with the script's own frames the first time it happens at this place."""
        stats.script_errors += 1
        where = _script_line(exc.__traceback__)
        key = (where, type(exc).__name__)
        if key in self._logged:
            return
        if len(self._logged) < MAX_LOGGED_ERRORS:
            self._logged.add(key)
        log_event(log, "route_script_error", level=logging.ERROR, where=where,
                  error=f"{type(exc).__name__}: {exc}", traceback=_script_traceback(exc))


def _script_frames(tb: TracebackType | None) -> list[traceback.FrameSummary]:
    """The traceback's frames outside leansip itself: the script's (and the modules it uses)."""
    return [f for f in traceback.extract_tb(tb) if not f.filename.startswith(_LEANSIP_DIR)]


def _script_line(tb: TracebackType | None) -> str:
    frames = _script_frames(tb)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename}:{last.lineno}"


def _script_traceback(exc: BaseException) -> str:
    lines = traceback.format_list(_script_frames(exc.__traceback__))
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


_counter = itertools.count(1)


def load_routes(path: str | Path) -> Routes:
    """Run the route script at ``path`` (a fresh module each time: a reload gets new code) and return its
    :class:`Routes`: the module's ``routes``, or its only ``Routes`` object.

    Raises :class:`RouteScriptError` (one line, ``file:line: what``) when the file cannot be read, does not
    compile, fails while it runs, has no ``Routes``, or has one with no handler."""
    file = Path(path)
    shown = str(file)
    if not file.is_file():
        raise RouteScriptError(f"{shown}: no such route script")
    name = f"leansip_route_script_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise RouteScriptError(f"{shown}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    folder = str(file.resolve().parent)
    if folder not in sys.path:
        sys.path.append(folder)  # the script may import helpers that sit next to it
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise RouteScriptError(f"{exc.filename or shown}:{exc.lineno}: SyntaxError: {exc.msg}") from None
    except Exception as exc:  # noqa: BLE001 - whatever the script raised while it ran: one line, its place
        sys.modules.pop(name, None)
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == file
                  or f.filename == str(file.resolve())]
        line = frames[-1].lineno if frames else 1
        raise RouteScriptError(f"{shown}:{line}: {type(exc).__name__}: {exc}") from None
    routes = _find_routes(module, shown)
    if routes.empty:
        where = routes.defined_at
        line = where[1] if Path(where[0]).resolve() == file.resolve() else 1
        raise RouteScriptError(f"{shown}:{line}: Routes() has no handler: add one with @routes.request(\"INVITE\")")
    return routes


def _find_routes(module: ModuleType, shown: str) -> Routes:
    named = getattr(module, "routes", None)
    if isinstance(named, Routes):
        return named
    found = [v for v in vars(module).values() if isinstance(v, Routes)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise RouteScriptError(f"{shown}:1: no Routes in the script: add routes = Routes() and its handlers")
    raise RouteScriptError(f"{shown}:1: several Routes objects: name the one to use `routes`")
