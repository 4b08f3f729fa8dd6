"""Server configuration: one dataclass, loaded from TOML, overridden by CLI flags.

Theory of operation: every server setting is a field of :class:`Config`, and every field has one
entry in :data:`FIELDS` saying its kind and help text.  That single table drives three things so
they cannot drift apart: strict TOML type checking in :func:`load_config`, the ``leansip serve``
flags (``leansip.app.cli`` builds one option per field) and the documentation in ``--help``.

The TOML file is flat: top-level keys are the field names, e.g.::

    listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    mode = "proxy"
    min_expires = 60

Anything wrong raises :class:`ConfigError` whose message is one line naming the file, the line and
the key, because a server that refuses to start must say exactly where to look.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import socket
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
#: Port used when a listen spec omits it (RFC 3261 sec. 19.1.2 for SIP, RFC 7118 for WebSocket).
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}
MODES = ("proxy", "redirect", "registrar")
LOCATIONS = ("memory", "sqlite", "redis")
#: durable: a REGISTER's 200 OK waits for its binding's commit (group commit); relaxed: written behind every 50 ms
DURABILITIES = ("durable", "relaxed")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("logfmt", "json")
AUTH_ALGORITHMS = ("SHA-256", "SHA-512-256", "MD5")
#: Said next to ``--auth-algorithms`` (help, README): these clients never answer a challenge naming SHA-256, and
#: the server cannot tell (no second request ever comes).
MD5_ONLY_NOTE = "baresip 1.0, sipsak and SIPp 3.6 need MD5 alone: --auth-algorithms MD5"

#: Where the package ships its demo user list (written by the users module's owner).
DEMO_USERS_FILE = Path(__file__).resolve().parent.parent / "data" / "users.txt"
#: Realm used by ``Config.demo()``: fixed so stored HA1 values stay valid across machines.
DEMO_REALM = "leansip"


class ConfigError(ValueError):
    """A setting is missing, unknown, of the wrong type or out of range.

    ``str(err)`` is a complete one-line message (with ``file:line:`` when the setting came from a
    file) meant to be printed as is.  ``key`` names the offending setting when there is one.
    """

    def __init__(self, message: str, *, key: str | None = None, path: Path | None = None,
                 line: int | None = None) -> None:
        self.key = key
        self.path = path
        self.line = line
        self.reason = message
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        what = f"{key}: " if key is not None else ""
        super().__init__(f"{where}{what}{message}")


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """One socket to listen on.  ``str()`` gives back the ``transport:host:port`` form."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"

    @property
    def secure(self) -> bool:
        """True for transports that need a certificate (tls, wss)."""
        return self.transport in ("tls", "wss")


def parse_listen(text: str) -> ListenSpec:
    """Parse ``transport:host[:port]``; IPv6 hosts go in brackets: ``udp:[::1]:5060``.

    The port defaults per transport (5060 udp/tcp, 5061 tls, 80 ws, 443 wss); port 0 means "any
    free port".  Raises ConfigError with a message that shows the expected form.
    """
    form = "expected transport:host[:port] like udp:127.0.0.1:5060 or tls:[::1]:5061"
    transport, sep, rest = text.strip().partition(":")
    transport = transport.lower()
    if not sep or not rest:
        raise ConfigError(f"bad listen spec {text!r}: {form}")
    if transport not in TRANSPORTS:
        raise ConfigError(f"bad listen spec {text!r}: transport must be one of {', '.join(TRANSPORTS)}")
    port_text: str | None
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ConfigError(f"bad listen spec {text!r}: {form}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"bad listen spec {text!r}: {host!r} is not an IPv6 address") from None
        port_text = after[1:] if after else None
    elif rest.count(":") > 1:
        raise ConfigError(f"bad listen spec {text!r}: put IPv6 addresses in brackets, e.g. udp:[::1]:5060")
    else:
        host, colon, port_part = rest.partition(":")
        port_text = port_part if colon else None
    if not host or not re.fullmatch(r"[A-Za-z0-9._:%-]+", host):
        raise ConfigError(f"bad listen spec {text!r}: missing or invalid host")
    if port_text is None:
        port = DEFAULT_PORTS[transport]
    else:
        if not port_text.isdigit():
            raise ConfigError(f"bad listen spec {text!r}: port {port_text!r} is not a number")
        port = int(port_text)
        if port > 65535:
            raise ConfigError(f"bad listen spec {text!r}: port {port} is out of range 0-65535")
    return ListenSpec(transport, host, port)


def _default_listen() -> list[ListenSpec]:
    return [ListenSpec("udp", "127.0.0.1", 5060)]


@dataclass
class Config:
    """Every server setting, with the product defaults.

    Build one with ``Config()``, :meth:`demo`, :func:`load_config` or :func:`apply_overrides`, then
    call :meth:`validate` (the loaders already do) before handing it to ``leansip.app.serve.run``.
    """

    listen: list[ListenSpec] = field(default_factory=_default_listen)
    port_fallback: bool = False
    mode: str = "proxy"
    routes: Path | None = None
    stateful: bool = True
    auth: bool = False
    realm: str = field(default_factory=socket.gethostname)
    users: Path | None = None
    db: Path = Path("var/leansip.db")
    location: str = "sqlite"
    durability: str = "durable"
    redis_url: str = "redis://127.0.0.1:6379/0"
    log_level: str = "warning"
    log_format: str = "logfmt"
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 86400
    max_transactions: int = 100000
    max_transaction_memory: int = 256
    record_route: bool = True
    nonce_ttl: int = 300
    auth_algorithms: list[str] = field(default_factory=lambda: ["SHA-256", "MD5"])
    fail_slow_after: int = 5
    fail_block_after: int = 20
    block_seconds: int = 300
    admin: str | None = "127.0.0.1:8080"
    admin_token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tcp_idle_timeout: float = 300.0
    max_connections: int = 10000
    max_connections_per_ip: int = 100
    workers: int = 1
    bare: bool = False
    bare_spin: float = math.inf
    cpu: int | None = None
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    server_name: str = "leansip"
    calls: bool = True
    max_calls: int = 100000
    call_timeout: float = 14400.0
    cdr: bool = True
    cdr_db: Path | None = None
    cdr_retention_days: int = 90
    #: ``[gateways.NAME]`` tables and ``[[gateway_routes]]`` entries as decoded from TOML (checked by validate;
    #: ``leansip.server.gateways.parse_gateways`` builds the live sets from them at start)
    gateways: dict[str, Any] = field(default_factory=dict)
    gateway_routes: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def demo(cls) -> Config:
        """The embedded default behind ``leansip serve --demo`` / ``make run``.

        Stateful proxy with registrar on udp:127.0.0.1:5060 (another free port when taken), digest
        auth against the shipped demo users (alice/alice, bob/bob, carol/carol), SQLite in ./var/.
        """
        return cls(
            listen=[ListenSpec("udp", "127.0.0.1", 5060), ListenSpec("tcp", "127.0.0.1", 5060),
                    ListenSpec("tls", "127.0.0.1", 5061)],
            port_fallback=True,
            mode="proxy",
            stateful=True,
            auth=True,
            realm=DEMO_REALM,
            users=DEMO_USERS_FILE,
            db=Path("var/leansip.db"),
            location="sqlite",
        )

    @property
    def cdr_path(self) -> Path:
        """Where call detail records go: ``cdr_db``, else ``cdr.db`` beside the location database."""
        return self.cdr_db if self.cdr_db is not None else Path(self.db).parent / "cdr.db"

    @property
    def admin_address(self) -> tuple[str, int] | None:
        """``admin`` split into (host, port), or None when the admin endpoint is off."""
        if self.admin is None:
            return None
        return _split_hostport(self.admin)

    def validate(self) -> Config:
        """Check ranges and cross-field rules; return self so calls can chain.

        Raises ConfigError naming the first offending key.
        """
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name))
        if not self.listen:
            raise ConfigError("needs at least one address", key="listen")
        for spec in self.listen:
            if spec.transport not in TRANSPORTS:
                raise ConfigError(f"unknown transport {spec.transport!r}", key="listen")
            if not 0 <= spec.port <= 65535:
                raise ConfigError(f"port {spec.port} is out of range 0-65535", key="listen")
        _one_of("mode", self.mode, MODES)
        if self.routes is not None and self.mode != "proxy":
            raise ConfigError(f"a route script runs in proxy mode, not {self.mode} (drop --mode or set "
                              "mode = \"proxy\")", key="routes")
        _one_of("location", self.location, LOCATIONS)
        _one_of("durability", self.durability, DURABILITIES)
        _one_of("log_level", self.log_level, LOG_LEVELS)
        _one_of("log_format", self.log_format, LOG_FORMATS)
        if not self.auth_algorithms:
            raise ConfigError("needs at least one algorithm", key="auth_algorithms")
        for algorithm in self.auth_algorithms:
            _one_of("auth_algorithms", algorithm, AUTH_ALGORITHMS)
        if self.min_expires < 1:
            raise ConfigError(f"must be >= 1, got {self.min_expires}", key="min_expires")
        if not self.min_expires <= self.default_expires <= self.max_expires:
            raise ConfigError(
                f"need min_expires <= default_expires <= max_expires, got "
                f"{self.min_expires} <= {self.default_expires} <= {self.max_expires}",
                key="min_expires" if self.min_expires > self.default_expires else "max_expires")
        for name in ("max_transactions", "max_transaction_memory", "nonce_ttl", "max_connections",
                     "max_connections_per_ip", "workers", "block_seconds", "max_calls"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", key=name)
        if self.workers > 1:
            # One process per node for now: a stateful proxy's responses must reach the worker that holds the
            # transaction, which needs per-worker sockets; scale out with several nodes on --location redis.
            raise ConfigError(f"only 1 worker per node is supported, got {self.workers} (run several nodes "
                              "with location = \"redis\" to use more cores)", key="workers")
        if math.isnan(self.bare_spin) or self.bare_spin < 0:
            raise ConfigError(f"must be >= 0 seconds (or inf: never sleep), got {self.bare_spin}", key="bare_spin")
        if self.bare and not any(spec.transport == "udp" for spec in self.listen):
            raise ConfigError("bare mode polls the UDP listeners, and none is configured (listen udp:HOST:PORT)",
                              key="bare")
        if self.cpu is not None and self.cpu < 0:
            raise ConfigError(f"must be a CPU number >= 0, got {self.cpu}", key="cpu")
        for name in ("fail_slow_after", "fail_block_after"):
            if getattr(self, name) < 0:
                raise ConfigError(f"must be >= 0 (0 disables it), got {getattr(self, name)}", key=name)
        if self.cdr_retention_days < 0:
            raise ConfigError(f"must be >= 0 (0 keeps records forever), got {self.cdr_retention_days}",
                              key="cdr_retention_days")
        for name in ("t1", "t2", "t4", "tcp_idle_timeout", "call_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"must be > 0 seconds, got {getattr(self, name)}", key=name)
        if self.t2 < self.t1:
            # RFC 3261 sec. 17.1.2.2: T2 caps the doubled retransmit interval, so it cannot be below T1.
            raise ConfigError(f"must be >= t1 ({self.t1}), got {self.t2}", key="t2")
        if not self.realm:
            raise ConfigError("must not be empty", key="realm")
        if not self.server_name:
            raise ConfigError("must not be empty", key="server_name")
        if self.auth and self.users is None:
            raise ConfigError("auth is on but no users file is set (users = FILE)", key="users")
        if self.location == "redis" and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"must start with redis://, rediss:// or unix://, got {self.redis_url!r}",
                              key="redis_url")
        from leansip.server.gateways import GatewayConfigError, parse_gateways

        try:
            parse_gateways(self.gateways, self.gateway_routes)
        except GatewayConfigError as exc:
            raise ConfigError(exc.reason, key=exc.key) from None
        if self.admin is not None:
            try:
                _split_hostport(self.admin)
            except ValueError as exc:
                raise ConfigError(str(exc), key="admin") from None
        if any(spec.secure for spec in self.listen) and (self.tls_cert is None) != (self.tls_key is None):
            # both missing is allowed: the server then makes a self-signed development certificate under the
            # database's directory (./var/ by default) and says so in its log
            name = "tls_key" if self.tls_key is None else "tls_cert"
            secure = next(str(s) for s in self.listen if s.secure)
            raise ConfigError(f"listen {secure} needs both tls_cert and tls_key (or neither, for a development "
                              "certificate)", key=name)
        return self


def _one_of(key: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"must be one of {', '.join(allowed)}, got {value!r}", key=key)


def _split_hostport(text: str) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port``; raise ValueError with a readable reason."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.%]+)\]:(\d+)|([^:\[\]]+):(\d+)", text.strip())
    if not match:
        raise ValueError(f"expected HOST:PORT (or [IPv6]:PORT, or off), got {text!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return host, port


# --- the field table -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FieldInfo:
    """How one Config field is typed in TOML and on the command line, and what it means."""

    kind: str  # bool int optint float str optstr path optpath listen strlist admin
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None


FIELDS: dict[str, FieldInfo] = {
    "listen": FieldInfo("listen", "address to listen on, transport:host[:port] (transports: "
                        "udp tcp tls ws wss); repeat for several", "SPEC"),
    "port_fallback": FieldInfo("bool", "if a listen port is taken, use a free one and print it"),
    "mode": FieldInfo("str", "what the server does with requests other than REGISTER", "MODE", MODES),
    "routes": FieldInfo("optpath", "route script: a Python file whose handlers decide where requests go "
                        "(README \"Routing in Python\"); reloaded on SIGHUP and POST /api/reload", "FILE"),
    "stateful": FieldInfo("bool", "proxy with transactions (retransmissions, forking, CANCEL) "
                          "instead of stateless forwarding"),
    "auth": FieldInfo("bool", "challenge requests with digest authentication against the users file"),
    "realm": FieldInfo("str", "digest realm (default: this host's name)", "REALM"),
    "users": FieldInfo("optpath", "users file for digest auth (name and password or HA1)", "FILE"),
    "db": FieldInfo("path", "SQLite database file (created with its directory)", "PATH"),
    "location": FieldInfo("str", "where registrations are stored", "STORE", LOCATIONS),
    "durability": FieldInfo("str", "sqlite: durable holds a REGISTER's 200 OK until its binding is committed "
                            "(group commit, fsync per batch); relaxed answers at once and writes behind every "
                            "50 ms (a kill -9 loses the last 50 ms)", "MODE", DURABILITIES),
    "redis_url": FieldInfo("str", "Redis server used when location is redis", "URL"),
    "log_level": FieldInfo("str", "log threshold; logs are one line per event on stderr", "LEVEL", LOG_LEVELS),
    "log_format": FieldInfo("str", "log line format: logfmt (key=value) or json (one object a line)", "FORMAT",
                            LOG_FORMATS),
    "default_expires": FieldInfo("int", "registration lifetime when the client asks none, seconds", "N"),
    "min_expires": FieldInfo("int", "shorter registrations get 423 Interval Too Brief, seconds", "N"),
    "max_expires": FieldInfo("int", "longer registrations are cut to this, seconds", "N"),
    "max_transactions": FieldInfo("int", "open transactions before new requests get 503", "N"),
    "max_transaction_memory": FieldInfo("int", "MiB the open transactions may keep (requests and responses held for "
                                        "retransmission, estimated) before new requests get 503", "MIB"),
    "record_route": FieldInfo("bool", "add Record-Route so in-dialog requests pass through the proxy"),
    "nonce_ttl": FieldInfo("int", "digest nonce lifetime, seconds", "N"),
    "auth_algorithms": FieldInfo("strlist", "digest algorithms offered, in order, comma separated "
                                 f"({', '.join(AUTH_ALGORITHMS)}); {MD5_ONLY_NOTE}", "LIST"),
    "fail_slow_after": FieldInfo("int", "failed auth attempts per source before replies are delayed "
                                 "(0 = never)", "N"),
    "fail_block_after": FieldInfo("int", "failed auth attempts per source before it is blocked "
                                  "(0 = never)", "N"),
    "block_seconds": FieldInfo("int", "how long a blocked source stays blocked, seconds", "N"),
    "admin": FieldInfo("admin", "admin HTTP endpoint (status, metrics), HOST:PORT or off", "HOST:PORT"),
    "admin_token": FieldInfo("optstr", "bearer token required by the admin endpoint", "TOKEN"),
    "tls_cert": FieldInfo("optpath", "TLS certificate chain (PEM) for tls/wss listeners", "FILE"),
    "tls_key": FieldInfo("optpath", "TLS private key (PEM) for tls/wss listeners", "FILE"),
    "tls_ca": FieldInfo("optpath", "CA bundle (PEM) to verify TLS peers", "FILE"),
    "tcp_idle_timeout": FieldInfo("float", "close idle TCP/TLS/WS connections after, seconds", "SECONDS"),
    "max_connections": FieldInfo("int", "open stream connections in total", "N"),
    "max_connections_per_ip": FieldInfo("int", "open stream connections per source address", "N"),
    "workers": FieldInfo("int", "worker processes per node (only 1 is supported; scale out with redis)", "N"),
    "bare": FieldInfo("bool", "serve UDP from a loop that polls its sockets instead of sleeping until a datagram "
                      "comes: lower latency, and one core kept fully busy (see bare_spin)"),
    "bare_spin": FieldInfo("float", "with bare: seconds the loop keeps polling after its last datagram before it "
                           "sleeps until the next one (inf: never sleeps)", "SECONDS"),
    "cpu": FieldInfo("optint", "pin the server's thread (with bare: the polling loop) to this CPU core", "N"),
    "t1": FieldInfo("float", "RFC 3261 timer T1 (RTT estimate), seconds", "SECONDS"),
    "t2": FieldInfo("float", "RFC 3261 timer T2 (max non-INVITE retransmit interval), seconds", "SECONDS"),
    "t4": FieldInfo("float", "RFC 3261 timer T4 (max message lifetime in the network), seconds", "SECONDS"),
    "server_name": FieldInfo("str", "value of the Server and User-Agent headers", "NAME"),
    "calls": FieldInfo("bool", "track the calls through the stateful proxy (live calls, call records, call "
                       "metrics); off only to measure what it costs"),
    "max_calls": FieldInfo("int", "calls tracked at once; past it new calls are answered 503", "N"),
    "call_timeout": FieldInfo("float", "a call with no sign of life (BYE, re-INVITE, UPDATE) for this long is "
                              "over: a lost BYE; RFC 4028 session timers end it sooner, seconds", "SECONDS"),
    "cdr": FieldInfo("bool", "write a call detail record per call attempt (SQLite, off the straight path)"),
    "cdr_db": FieldInfo("optpath", "call detail records database (default: cdr.db beside db)", "PATH"),
    "cdr_retention_days": FieldInfo("int", "delete call records older than this (0 = keep forever), days", "N"),
    "gateways": FieldInfo("gateways", "gateway sets: [gateways.NAME] tables with destinations, a policy and "
                          "health probes (config file only; see leansip.example.toml)"),
    "gateway_routes": FieldInfo("gateway_routes", "[[gateway_routes]] entries sending a domain or a number prefix "
                                "to a gateway set (config file only)"),
}

#: Kinds of field that only a config file can set (tables): no command-line flag.
TABLE_KINDS = ("gateways", "gateway_routes")

_TOML_TYPE_NAMES = {
    "bool": "a boolean (true/false)",
    "int": "an integer",
    "optint": "an integer",
    "float": "a number",
    "str": "a string",
    "optstr": "a string",
    "path": "a path string",
    "optpath": "a path string",
    "listen": 'a list of strings like ["udp:127.0.0.1:5060"]',
    "strlist": "a list of strings",
    "admin": 'a "HOST:PORT" string or false',
    "gateways": "a table of [gateways.NAME] tables",
    "gateway_routes": "an array of [[gateway_routes]] tables",
}


def convert_toml(name: str, value: Any) -> Any:
    """Turn a TOML value for field ``name`` into the Config value; ConfigError if the type is wrong.

    Strict on purpose (an integer is not a boolean, a string is not a number): a typo in a config
    file should stop the server, not silently change behaviour.
    """
    kind = FIELDS[name].kind

    def wrong() -> ConfigError:
        return ConfigError(f"must be {_TOML_TYPE_NAMES[kind]}, got {_toml_type(value)} {value!r}", key=name)

    if kind == "bool":
        if not isinstance(value, bool):
            raise wrong()
        return value
    if kind in ("int", "optint"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong()
        return float(value)
    if kind in ("str", "optstr"):
        if not isinstance(value, str):
            raise wrong()
        return value
    if kind in ("path", "optpath"):
        if not isinstance(value, str) or not value:
            raise wrong()
        return Path(value)
    if kind == "admin":
        if value is False:
            return None
        if not isinstance(value, str):
            raise wrong()
        return None if value.lower() in ("off", "none", "") else value
    if kind == "listen":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise wrong()
        try:
            return [parse_listen(i) for i in items]
        except ConfigError as exc:
            raise ConfigError(exc.reason, key=name) from None
    if kind == "strlist":
        if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
            raise wrong()
        return list(value)
    if kind == "gateways":  # checked as a whole by Config.validate (routes refer to sets)
        if not isinstance(value, dict):
            raise wrong()
        return value
    if kind == "gateway_routes":
        if not isinstance(value, list):
            raise wrong()
        return value
    raise AssertionError(f"unknown field kind {kind!r}")  # a bug in FIELDS, not in the user's file


def _toml_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    return names.get(type(value), type(value).__name__)


def _check_type(name: str, value: Any) -> None:
    """Catch wrong Python types set programmatically (tests, overrides) before they reach the server."""
    kind = FIELDS[name].kind
    expected: dict[str, Callable[[Any], bool]] = {
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "optint": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
        "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "optstr": lambda v: v is None or isinstance(v, str),
        "path": lambda v: isinstance(v, Path),
        "optpath": lambda v: v is None or isinstance(v, Path),
        "admin": lambda v: v is None or isinstance(v, str),
        "listen": lambda v: isinstance(v, list) and all(isinstance(i, ListenSpec) for i in v),
        "strlist": lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
        "gateways": lambda v: isinstance(v, dict),
        "gateway_routes": lambda v: isinstance(v, list),
    }
    if not expected[kind](value):
        raise ConfigError(f"must be {_TOML_TYPE_NAMES[kind]}, got {type(value).__name__} {value!r}", key=name)


# --- command-line values ---------------------------------------------------------------------------

def convert_cli(name: str, text: str) -> Any:
    """Turn the text of a ``--flag`` for field ``name`` into the Config value (used as argparse type).

    Raises ValueError with a readable reason; argparse turns it into ``leansip: error: ...``.
    """
    kind = FIELDS[name].kind
    if kind in ("int", "optint"):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    if kind in ("str", "optstr"):
        return text
    if kind in ("path", "optpath"):
        if not text:
            raise ValueError("empty path")
        return Path(text)
    if kind == "admin":
        if text.lower() in ("off", "none", ""):
            return ADMIN_OFF
        _split_hostport(text)  # ValueError with a readable reason
        return text
    if kind == "listen":
        try:
            return parse_listen(text)
        except ConfigError as exc:
            raise ValueError(exc.reason) from None
    if kind == "strlist":
        return [part.strip() for part in text.split(",") if part.strip()]
    raise AssertionError(f"field kind {kind!r} has no text form")


def apply_overrides(config: Config, args: Any) -> Config:
    """Return a copy of ``config`` with every field that ``args`` sets (not None) replaced, validated.

    ``args`` is an argparse Namespace (or any object) whose attributes are named like the fields and
    already converted with :func:`convert_cli`; ``listen`` is a list that replaces the configured
    addresses.  The admin flag uses the sentinel :data:`ADMIN_OFF` for "off" because None means
    "not given".
    """
    changes: dict[str, Any] = {}
    for name in FIELDS:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name == "admin" and value == ADMIN_OFF:
            value = None
        elif name == "listen" and isinstance(value, ListenSpec):
            value = [value]
        changes[name] = value
    return dataclasses.replace(config, **changes).validate()


#: Value the CLI stores for ``--admin off`` so that "given as off" differs from "not given".
ADMIN_OFF = "off"


# --- TOML loading ----------------------------------------------------------------------------------

def load_config(path: str | Path, *, base: Config | None = None) -> Config:
    """Read a flat TOML file into a validated Config (fields not in the file keep ``base`` values).

    Raises ConfigError naming the file and line: syntax errors use tomllib's position, unknown keys,
    wrong types and out-of-range values point at the line where the key is written.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", path=path) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, reason = _toml_error_position(str(exc))
        raise ConfigError(f"TOML syntax error: {reason}", path=path, line=line) from None

    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in FIELDS:
            hint = _suggest(key)
            raise ConfigError(f"unknown setting{hint}", key=key, path=path, line=_key_line(text, key))
        try:
            changes[key] = convert_toml(key, value)
        except ConfigError as exc:
            raise ConfigError(exc.reason, key=key, path=path, line=_key_line(text, key)) from None
    config = dataclasses.replace(base if base is not None else Config(), **changes)
    try:
        return config.validate()
    except ConfigError as exc:
        if exc.key in data:
            line = _key_line(text, exc.key)
        else:
            line = _nested_key_line(text, exc.key) if exc.key and re.split(r"[.\[]", exc.key)[0] in data else None
        raise ConfigError(exc.reason, key=exc.key, path=path, line=line) from None


def _toml_error_position(message: str) -> tuple[int | None, str]:
    """tomllib says "Invalid value (at line 3, column 9)"; split that into (3, "Invalid value")."""
    match = re.search(r"\s*\(at line (\d+), column \d+\)$", message)
    if match:
        return int(match.group(1)), message[: match.start()]
    match = re.search(r"\s*\(at end of document\)$", message)
    if match:
        return None, message[: match.start()] + " at end of file"
    return None, message


def _key_line(text: str, key: str | None) -> int | None:
    """Line number (1-based) where top-level ``key`` is assigned or opened as a table, if found.

    tomllib keeps no positions, so scan the text.  Only lines before the first table header count
    as top-level assignments; a key that is itself a table (``[key]``) matches its header.
    """
    if key is None:
        return None
    quoted = re.escape(key)
    assign = re.compile(rf"""^\s*(?:{quoted}|"{quoted}"|'{quoted}')\s*[=.]""")
    header = re.compile(rf"""^\s*\[\[?\s*(?:{quoted}|"{quoted}"|'{quoted}')\s*[\].]""")
    in_table = False
    for number, line in enumerate(text.splitlines(), start=1):
        if header.match(line):
            return number
        if re.match(r"^\s*\[", line):
            in_table = True
            continue
        if not in_table and assign.match(line):
            return number
    return None


def _nested_key_line(text: str, key: str) -> int | None:
    """Line of a key inside tables, named as ``gateways.pstn.destinations[1].address`` (parse_gateways' keys).

    Each table header gets its full path (an array of tables counts its headers: the second
    ``[[gateway_routes]]`` is ``gateway_routes[1]``); the deepest header that the key starts with is the
    table, and the key's next part written in that table is the line (else the header's own line)."""
    counts: dict[str, int] = {}
    best: tuple[int, int] | None = None  # (length of the matched path, line)
    current: str | None = None
    header = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    for number, line in enumerate(text.splitlines(), start=1):
        match = header.match(line)
        if match:
            name = ".".join(part.strip().strip('"\'') for part in match.group(2).split("."))
            if match.group(1) == "[[":
                counts[name] = counts.get(name, -1) + 1
                name = f"{name}[{counts[name]}]"
            current = name
            if (key == name or key.startswith(name + ".")) and (best is None or len(name) > best[0]):
                best = (len(name), number)
            continue
        if current is None or not key.startswith(current + "."):
            continue
        part = re.split(r"[.\[]", key[len(current) + 1:], maxsplit=1)[0]
        if re.match(rf"""^\s*(?:{re.escape(part)}|"{re.escape(part)}")\s*=""", line) and (
                best is None or len(current) + 1 + len(part) > best[0]):
            best = (len(current) + 1 + len(part), number)
    return best[1] if best is not None else None


def _suggest(key: str) -> str:
    """Suggest the nearest known setting for a typo, e.g. ``min_expire`` -> ``min_expires``."""
    import difflib

    close = difflib.get_close_matches(key.replace("-", "_"), FIELDS, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def config_to_toml(config: Config) -> str:
    """Render ``config`` as a TOML document that :func:`load_config` reads back to an equal Config.

    Used by ``leansip serve --print-config`` so the effective settings (file + flags) can be seen
    and saved.  Unset optional values are written as comments because TOML has no null.
    """
    lines = []
    for name, info in FIELDS.items():
        if info.kind in TABLE_KINDS:
            continue  # tables come after every plain key (TOML puts a key after a table header in that table)
        value = getattr(config, name)
        lines.append(f"# {info.help}")
        if value is None and info.kind == "admin":
            lines.append(f"{name} = false")
        elif value is None:
            lines.append(f"# {name} = ")
        elif info.kind == "listen":
            lines.append(f"{name} = [{', '.join(_toml_str(str(s)) for s in value)}]")
        elif info.kind == "strlist":
            lines.append(f"{name} = [{', '.join(_toml_str(s) for s in value)}]")
        elif isinstance(value, bool):
            lines.append(f"{name} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{name} = {value!r}")
        else:
            lines.append(f"{name} = {_toml_str(str(value))}")
    for set_name, table in config.gateways.items():
        lines.append(f"\n[gateways.{_toml_key(set_name)}]")
        dests = table.get("destinations", [])
        inline = all(isinstance(d, str) for d in dests)  # written as they were: a list of addresses
        for key, value in table.items():
            if key != "destinations" or inline:
                lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        for dest in [] if inline else dests:
            lines.append(f"\n[[gateways.{_toml_key(set_name)}.destinations]]")
            dest = dest if isinstance(dest, dict) else {"address": dest}
            lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in dest.items())
    for route in config.gateway_routes:
        lines.append("\n[[gateway_routes]]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in route.items())
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_str(key)


def _toml_value(value: Any) -> str:
    """A scalar or a list of scalars as TOML (what gateway tables hold)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return _toml_str(str(value))


def _toml_str(text: str) -> str:
    """A TOML basic string; json.dumps escaping is a subset TOML accepts."""
    import json

    return json.dumps(text, ensure_ascii=False)
