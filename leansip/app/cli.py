"""The ``leansip`` command: ``serve``, ``users``, ``status``, ``cdr``, ``phone`` and ``bench``.

Theory of operation: ``serve`` builds a :class:`~leansip.app.config.Config` from (in order of
precedence) its flags, ``--config FILE``, and the built-in defaults (or ``--demo``), validates it,
and hands it to ``leansip.app.serve.run(config) -> int``.  The ``serve`` flags are generated from
``leansip.app.config.FIELDS`` so every setting is settable and documented in ``--help``.

``phone`` and ``bench`` own their options: their argv is passed untouched to
``leansip.ua.cli.main(argv)`` / ``leansip.app.bench.main(argv)``.  ``status`` parses its few
options here and calls ``leansip.app.status.main(args)`` with the Namespace.  All of those modules
are imported lazily so one missing or slow import cannot break the other commands.

Any usage or configuration error prints exactly one line, ``leansip: error: ...``, on stderr and
exits with status 2, so scripts and people see the cause without a usage dump.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from leansip.app.config import (
    DEMO_USERS_FILE,
    FIELDS,
    TABLE_KINDS,
    Config,
    ConfigError,
    apply_overrides,
    config_to_toml,
    convert_cli,
    load_config,
)

PROG = "leansip"
#: Users file the ``users`` commands use when ``--users`` is not given; seeded from the demo file.
DEFAULT_USERS_FILE = Path("var/users.txt")
#: Commands whose options belong to another module: (module, function).
PASSTHROUGH: dict[str, tuple[str, str, str]] = {
    "phone": ("leansip.ua.cli", "main", "SIP softphone (see: leansip phone --help)"),
    "bench": ("leansip.app.bench", "main", "load generator and benchmarks (see: leansip bench --help)"),
}


class UsageError(Exception):
    """A problem in what the user typed or configured; main() prints it as one error line, exit 2."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one ``leansip: error: ...`` line instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        _print_error(message)
        sys.exit(2)


def _print_error(message: str) -> None:
    # One line, whatever the message: a multi-line cause would be cut from logs and scripts.
    sys.stderr.write(f"{PROG}: error: {' '.join(str(message).split())}\n")


def _cli_type(name: str) -> Callable[[str], Any]:
    """argparse ``type=`` for field ``name``: ArgumentTypeError keeps our reason in the message."""

    def convert(text: str) -> Any:
        try:
            return convert_cli(name, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def _default_text(name: str, defaults: Config) -> str:
    if name == "realm":
        return ""  # the host name, already said in the help text
    value = getattr(defaults, name)
    if value is None:
        return " (default: off)" if name == "admin" else " (default: none)"
    if isinstance(value, bool):
        return " (default: on)" if value else " (default: off)"
    if isinstance(value, list):
        return f" (default: {','.join(str(v) for v in value)})"
    return f" (default: {value})"


def _add_serve_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve", help="run the SIP server",
        description="Run the SIP server.  Settings come from the flags, then --config FILE, then the "
                    "defaults (or the --demo defaults).  Every option below is also a key of the TOML "
                    "config file, with dashes as underscores (see leansip.example.toml).")
    serve.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    serve.add_argument("--demo", action="store_true",
                       help="start from the demo defaults: stateful proxy + registrar on "
                            "udp:127.0.0.1:5060 (or a free port), digest auth with the demo users "
                            "alice/alice bob/bob carol/carol, SQLite in ./var/")
    serve.add_argument("--print-config", action="store_true",
                       help="print the effective configuration as TOML and exit")
    defaults = Config()
    for name, info in FIELDS.items():
        if info.kind in TABLE_KINDS:
            continue  # tables (gateway sets) are set in the config file only
        flag = "--" + name.replace("_", "-")
        help_text = info.help + _default_text(name, defaults)
        if info.kind == "bool":
            serve.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
            if name == "stateful":
                serve.add_argument("--stateless", dest=name, action="store_false",
                                   help="same as --no-stateful")
        elif info.kind == "listen":
            serve.add_argument(flag, dest=name, action="append", type=_cli_type(name), default=None,
                               metavar=info.metavar, help=help_text)
        else:
            serve.add_argument(flag, dest=name, type=_cli_type(name), default=None, metavar=info.metavar,
                               choices=info.choices, help=help_text)
    serve.set_defaults(func=_cmd_serve)


def _add_users_parser(commands: Any) -> None:
    users_file = _Parser(add_help=False)
    users_file.add_argument("--users", type=Path, metavar="FILE", default=None,
                            help=f"users file (default: {DEFAULT_USERS_FILE}, created from the demo "
                                 "users on first use)")
    users = commands.add_parser("users", help="manage the users file for digest auth",
                                description="Add, remove and list digest-auth users.")
    actions = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", parents=[users_file], help="add a user (or change one: --replace)",
                             description="Add NAME.  Give a password (stored as is, or as an HA1 "
                                         "hash when --realm is given too), or an HA1 hash with the "
                                         "realm it was made for.")
    add.add_argument("name", metavar="NAME", help="user name (the user part of the AOR)")
    secret = add.add_mutually_exclusive_group(required=True)
    secret.add_argument("--password", metavar="P", help="plain password")
    secret.add_argument("--ha1", metavar="H", help="precomputed HA1 = H(name:realm:password)")
    add.add_argument("--realm", metavar="R", help="realm the HA1 is for; with --password, store "
                     "H(name:realm:password) instead of the password")
    add.add_argument("--algorithm", choices=("MD5", "SHA-256"), default="MD5",
                     help="hash of the stored HA1 (default: MD5)")
    add.add_argument("--replace", action="store_true", help="replace the user if it exists")
    add.set_defaults(func=_cmd_users_add)
    remove = actions.add_parser("remove", parents=[users_file], help="remove a user")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(func=_cmd_users_remove)
    listing = actions.add_parser("list", parents=[users_file], help="list user names")
    listing.set_defaults(func=_cmd_users_list)


def _add_status_parser(commands: Any) -> None:
    status = commands.add_parser("status", help="show a running server's status (admin endpoint)",
                                 description="Ask a running server's admin endpoint for its status.")
    status.add_argument("--admin", default="http://127.0.0.1:8080", metavar="URL",
                        help="admin endpoint URL (default: http://127.0.0.1:8080)")
    status.add_argument("--admin-token", default=None, metavar="TOKEN",
                        help="bearer token for the admin endpoint")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(func=_cmd_status)


def version() -> str:
    """The installed package's version (the source tree's pyproject.toml when run from a checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("leansip")
    except PackageNotFoundError:
        return "(not installed)"


def _add_cdr_parser(commands: Any) -> None:
    cdr = commands.add_parser(
        "cdr", help="list call detail records (who called whom, when, how long, how it ended)",
        description="List the call detail records of the database a server writes (newest first).  Reads the "
                    "file directly: works while the server runs and after it stopped.")
    cdr.add_argument("--user", metavar="U", help="calls from or to this user (alice, or alice@host)")
    cdr.add_argument("--since", metavar="T", help="calls that started at or after T: epoch seconds, an ISO "
                                                  "date/time (UTC unless given), or an age like 30m, 12h, 7d")
    cdr.add_argument("--until", metavar="T", help="calls that started before T (same forms)")
    cdr.add_argument("--limit", type=int, default=None, metavar="N",
                     help="at most N records (default: 50, all with --csv)")
    cdr.add_argument("--csv", action="store_true", help="print CSV (a header line, ISO UTC times) for a "
                                                       "spreadsheet or a billing import")
    cdr.add_argument("--json", action="store_true", help="print the records as JSON")
    cdr.add_argument("--db", type=Path, metavar="PATH", help="CDR database (default: cdr_db of --config, else "
                                                          "var/cdr.db)")
    cdr.add_argument("--config", type=Path, metavar="FILE", help="the server's TOML config, to find its CDR "
                                                              "database")
    cdr.set_defaults(func=_cmd_cdr)


def build_parser() -> argparse.ArgumentParser:
    """The whole ``leansip`` argument parser (exposed for tests and docs generation)."""
    parser = _Parser(prog=PROG, description="leansip: a lean SIP server (registrar, proxy, redirect) "
                                            "and SIP softphone.")
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_serve_parser(commands)
    _add_users_parser(commands)
    _add_status_parser(commands)
    _add_cdr_parser(commands)
    for name, (_module, _function, help_text) in PASSTHROUGH.items():
        # Listed for --help only: main() dispatches these before parsing (see _passthrough).
        sub = commands.add_parser(name, help=help_text, add_help=False)
        sub.add_argument("argv", nargs=argparse.REMAINDER)
    return parser


# --- commands --------------------------------------------------------------------------------------

def build_config(args: argparse.Namespace) -> Config:
    """Defaults (or demo) <- --config FILE <- flags; validated.  Raises ConfigError."""
    base = Config.demo() if args.demo else Config()
    config = load_config(args.config, base=base) if args.config is not None else base
    try:
        return apply_overrides(config, args)
    except ConfigError as exc:
        flag = "--" + exc.key.replace("_", "-") if exc.key else None
        raise ConfigError(exc.reason, key=flag) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    config = build_config(args)
    if args.print_config:
        sys.stdout.write(config_to_toml(config))
        return 0
    from leansip.app.logging import setup_logging

    setup_logging(config.log_level, log_format=config.log_format)
    serve = _import_optional("leansip.app.serve", "serve")
    result = serve.run(config)
    return int(result or 0)


def _users_module() -> Any:
    return _import_optional("leansip.server.users", "users")


def users_path(given: Path | None) -> Path:
    """The users file to act on; the default one is seeded from the shipped demo users once."""
    if given is not None:
        return given
    if not DEFAULT_USERS_FILE.exists():
        DEFAULT_USERS_FILE.parent.mkdir(parents=True, exist_ok=True)
        if DEMO_USERS_FILE.exists():
            shutil.copyfile(DEMO_USERS_FILE, DEFAULT_USERS_FILE)
        else:
            DEFAULT_USERS_FILE.touch()
    return DEFAULT_USERS_FILE


def _cmd_users_add(args: argparse.Namespace) -> int:
    if args.ha1 is not None and args.realm is None:
        raise UsageError("--ha1 needs --realm (the realm the hash was computed for)")
    users = _users_module()
    path = users_path(args.users)
    try:
        record = users.add_user(path, args.name, args.password, ha1=args.ha1, realm=args.realm,
                                algorithm=args.algorithm, replace=args.replace)
    except (ValueError, OSError) as exc:
        raise CommandFailed(_reason(exc, path)) from None
    print(f"{'updated' if args.replace else 'added'} {record.username} in {path}")
    return 0


def _cmd_users_remove(args: argparse.Namespace) -> int:
    users = _users_module()
    path = users_path(args.users)
    try:
        removed = users.remove_user(path, args.name)
    except (ValueError, OSError) as exc:
        raise CommandFailed(_reason(exc, path)) from None
    if not removed:
        raise CommandFailed(f"no user {args.name!r} in {path}")
    print(f"removed {args.name} from {path}")
    return 0


def _cmd_users_list(args: argparse.Namespace) -> int:
    """One user per line: ``name<TAB>password`` or ``name<TAB>ha1 ALGORITHM realm=REALM``."""
    users = _users_module()
    path = users_path(args.users)
    try:
        records = users.list_users(path)
    except (ValueError, OSError) as exc:
        raise CommandFailed(_reason(exc, path)) from None
    for record in records:
        if record.password is not None:
            print(f"{record.username}\tpassword")
        else:
            print(f"{record.username}\tha1 {record.algorithm} realm={record.realm}")
    return 0


def _reason(exc: BaseException, path: Path) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"{path}: no such file"
    if isinstance(exc, OSError):
        return f"{path}: {exc.strerror or exc}"
    return str(exc)


def _cmd_status(args: argparse.Namespace) -> int:
    status = _import_optional("leansip.app.status", "status")
    return int(status.main(args) or 0)


def _cmd_cdr(args: argparse.Namespace) -> int:
    import json
    import sqlite3
    import time

    cdr = _import_optional("leansip.app.cdr", "cdr")
    if args.db is not None:
        path = args.db
    elif args.config is not None:
        path = load_config(args.config).cdr_path
    else:
        path = Config().cdr_path
    now = time.time()
    try:
        since = cdr.parse_since(args.since, now) if args.since else None
        until = cdr.parse_since(args.until, now) if args.until else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    limit = args.limit if args.limit is not None else (cdr.MAX_CSV if args.csv or args.json else 50)
    if not Path(path).exists():
        raise CommandFailed(f"{path}: no such file (no call recorded yet, or give --db / --config)")
    try:
        records, total = cdr.query(path, cdr.CdrFilter(args.user, since, until, limit))
    except sqlite3.Error as exc:
        raise CommandFailed(f"{path}: {exc}") from None
    if args.csv:
        sys.stdout.write(cdr.to_csv(records))
    elif args.json:
        json.dump({"total": total, "cdrs": records}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(cdr.render(records, total))
    return 0


def _passthrough(command: str, argv: list[str]) -> int:
    module_name, function, _help = PASSTHROUGH[command]
    module = _import_optional(module_name, command)
    return int(getattr(module, function)(argv) or 0)


class CommandFailed(Exception):
    """The command was well formed but could not be done (exit status 1, one error line)."""


class Unavailable(CommandFailed):
    """A command's module is not part of this build yet (exit status 1, not a usage error)."""


def _import_optional(module_name: str, command: str) -> Any:
    """Import a command's module; only *its own* absence becomes Unavailable, other import bugs raise."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise Unavailable(f"the {command!r} command is not available: module {module_name} is missing") \
            from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``leansip`` console script and ``python -m leansip``; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] in PASSTHROUGH:
            return _passthrough(args_list[0], args_list[1:])
        args = build_parser().parse_args(args_list)
        return int(args.func(args))
    except (ConfigError, UsageError) as exc:
        _print_error(str(exc))
        return 2
    except CommandFailed as exc:
        _print_error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


__all__ = ["build_config", "build_parser", "main", "users_path"]
