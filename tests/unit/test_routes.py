"""Route scripts (leansip.routes): handlers by method, errors that answer 500 and are logged once with the
script's file:line and counted, scripts that cannot load refused with one line naming file:line. Sans-I/O
(the core with a fake clock) except the last test, which runs ``leansip serve`` to see it refuse to start."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from leansip.routes import Routes, RouteScriptError, load_routes
from leansip.server.context import RequestContext
from leansip.sip.message import Request, Response
from tests.unit.proxy_kit import (
    ALICE,
    BOB1,
    feed,
    make_core,
    register,
    registered,
    request,
    requests,
    response_to,
)

VM = "sip:vm@192.0.2.99:5090"


def _up(outs: list) -> list[int]:
    return [o.status for o in outs if not o.is_request and o.dest == ALICE]


def _script(tmp_path: Path, body: str, name: str = "routes.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_handlers_by_method_star_and_405_for_the_rest() -> None:
    routes = Routes()

    @routes.request("INVITE", "message")
    def call(req: Request, ctx: RequestContext) -> None:
        ctx.reply(486 if req.method == "INVITE" else 202)

    core = make_core(handler=routes)
    assert _up(feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0)) == [100, 486]
    assert _up(feed(core, request("MESSAGE", "sip:bob@leansip"), ALICE, 1.0)) == [202]
    out = feed(core, request("SUBSCRIBE", "sip:bob@leansip"), ALICE, 1.0)
    assert _up(out) == [405] and out[0].msg.header("allow") == "REGISTER, INVITE, MESSAGE"

    @routes.request("*")
    def other(req: Request, ctx: RequestContext) -> None:
        ctx.reply(404)

    assert _up(feed(core, request("SUBSCRIBE", "sip:bob@leansip"), ALICE, 1.0)) == [404]


def test_the_built_in_proxy_with_auth_as_a_script() -> None:
    routes = Routes()

    @routes.request("*")
    def proxy(req: Request, ctx: RequestContext) -> None:
        if ctx.authenticate():
            ctx.relay()

    core = make_core(handler=routes, auth=True)
    registered_out = feed(core, register("bob", BOB1), BOB1, 1.0)
    assert [o.status for o in registered_out] == [401]  # REGISTER follows --auth, not the script
    out = feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0)
    assert _up(out) == [100, 407] and out[1].msg.header("proxy-authenticate")


def test_an_exception_answers_500_logs_once_with_the_scripts_line_and_counts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _script(tmp_path, """\
        from leansip.routes import Routes
        routes = Routes()

        @routes.request("INVITE")
        def call(req, ctx):
            ctx.relay("sip:vm@192.0.2.99:5090")
            table = {}
            return table[req.ruri.user]
        """)
    core = make_core(handler=load_routes(path))
    caplog.set_level(logging.ERROR, logger="leansip.routes")
    for i in range(3):
        assert _up(feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0 + i)) == [100, 500]
    records = [r for r in caplog.records if r.getMessage() == "route_script_error"]
    assert len(records) == 1
    fields = records[0].leansip_fields  # type: ignore[attr-defined]
    assert fields["where"] == f"{path}:8" and fields["error"] == "KeyError: 'bob'"
    assert f'File "{path}", line 8, in call' in fields["traceback"] and "leansip/" not in fields["traceback"]
    assert core.stats.script_errors == 3
    assert core.stats.as_dict()["script_errors"] == 3


def test_errors_in_failure_and_response_handlers_are_caught_too(caplog: pytest.LogCaptureFixture) -> None:
    routes = Routes()

    def broken_failure(req: Request, ctx: RequestContext, resp: Response) -> None:
        raise RuntimeError("voicemail is down")

    @routes.request("INVITE")
    def call(req: Request, ctx: RequestContext) -> None:
        ctx.relay(ctx.lookup(), on_failure=broken_failure)

    @routes.response
    def on_reply(resp: Response, ctx: object) -> None:
        raise ValueError("bad hook")

    core = make_core(handler=routes)
    registered(core, "bob", BOB1)
    bob = [o.msg for o in requests(feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0), "INVITE")][0]
    assert isinstance(bob, Request)
    assert _up(feed(core, response_to(bob, 180), BOB1, 1.1)) == [180]  # the hook failed; the 180 passes
    assert _up(feed(core, response_to(bob, 486), BOB1, 1.2)) == [500]  # the failure handler failed: 500
    assert core.stats.script_errors == 3  # 180 hook, 486 hook, failure handler


def test_register_hook_refuses_and_sees_the_authenticated_user() -> None:
    routes = Routes()
    seen: list[str | None] = []

    @routes.request("INVITE")
    def call(req: Request, ctx: RequestContext) -> None:
        ctx.relay()

    @routes.register
    def on_register(req: Request, ctx: RequestContext) -> None:
        seen.append(ctx.user)
        if "evil" in (req.header("user-agent") or ""):
            ctx.reply(403, "Not this phone")

    core = make_core(handler=routes)
    assert [o.status for o in feed(core, register("bob", BOB1, extra=[("User-Agent", "evil 1.0")]), BOB1, 1.0)] == [403]
    assert [o.status for o in feed(core, register("bob", BOB1), BOB1, 1.0)] == [200]
    assert seen == [None, None]


def test_decorators_refuse_what_cannot_work() -> None:
    routes = Routes()
    with pytest.raises(ValueError, match="@routes.register"):
        routes.request("REGISTER")
    with pytest.raises(ValueError, match="not a SIP method"):
        routes.request("IN VITE")
    with pytest.raises(TypeError):
        routes.request()


@pytest.mark.parametrize(("body", "line", "what"), [
    ("from leansip.routes import Routes\nroutes = Routes(\n", 2, "SyntaxError"),
    ("from leansip.routes import Routes\n\nroutes = Routes()\nimport no_such_module_here\n", 4,
     "ModuleNotFoundError: No module named 'no_such_module_here'"),
    ("x = 1\n", 1, "no Routes in the script"),
    ("from leansip.routes import Routes\n\n\nroutes = Routes()\n", 4, "Routes() has no handler"),
])
def test_a_script_that_cannot_load_is_one_line_naming_file_and_line(
        tmp_path: Path, body: str, line: int, what: str) -> None:
    path = tmp_path / "bad.py"
    path.write_text(body)
    with pytest.raises(RouteScriptError) as exc:
        load_routes(path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{path}:{line}: ") and what in message


def test_load_gives_a_fresh_module_each_time(tmp_path: Path) -> None:
    body = """\
        from leansip.routes import Routes
        routes = Routes()

        @routes.request("OPTIONS")
        def ping(req, ctx):
            ctx.reply({status})
        """
    path = _script(tmp_path, body.format(status=200))
    first = load_routes(path)
    path.write_text(textwrap.dedent(body.format(status=503)))
    second = load_routes(path)
    core = make_core(handler=first)
    assert _up(feed(core, request("OPTIONS", "sip:bob@leansip"), ALICE, 1.0)) == [200]
    core.handler = second
    assert _up(feed(core, request("OPTIONS", "sip:bob@leansip"), ALICE, 2.0)) == [503]


def test_serve_refuses_a_broken_script_at_start_with_one_line(tmp_path: Path) -> None:
    path = _script(tmp_path, "from leansip.routes import Routes\nroutes = Routes()\n1 / 0\n")
    result = subprocess.run([sys.executable, "-m", "leansip", "serve", "--routes", str(path), "--location", "memory",
                             "--listen", "udp:127.0.0.1:0", "--admin", "off"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"leansip: error: {path}:3: ZeroDivisionError: division by zero"


def test_config_takes_a_route_script_in_proxy_mode_only(tmp_path: Path) -> None:
    from leansip.app.config import Config, ConfigError, load_config

    toml = tmp_path / "leansip.toml"
    toml.write_text('routes = "examples/routes/pbx.py"\nusers = "users.txt"\n')
    assert load_config(toml).routes == Path("examples/routes/pbx.py")
    toml.write_text('mode = "redirect"\nroutes = "pbx.py"\n')
    with pytest.raises(ConfigError, match=r"leansip.toml:2: routes: a route script runs in proxy mode"):
        load_config(toml)
    with pytest.raises(ConfigError, match="proxy mode"):
        Config(routes=Path("x.py"), mode="registrar").validate()
