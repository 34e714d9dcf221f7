"""The `portkit` console script (and `python -m portkit`): Click-free lanes for the one-shot
commands people and scripts run most, and the Click command line (portkit.cli.main) for
everything else.

Why: importing Click costs about as much as `portkit explain 22` takes without it, and on a
host with tens of thousands of sockets `portkit ls --all --json` is measured against `ss -tan`.
A lane takes only the argument lists it knows completely:

- `ls` with only the value-less flags of LS_FLAGS (table or --json);
- `explain PORT` and `who PORT[/PROTO]`, each with or without --json.

It computes with the same library calls and prints with the same Click-free printers
(portkit.cli._text, _about_text, _sockets_text, _lsquery) as the Click commands. Anything else
(other options, --help, --watch, --kill) and any failure before output goes to Click, which
stays the reference: tests/test_sockets_entry.py and tests/test_cli_lanes.py hold each lane's
parsing and output to Click's.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    from collections.abc import Callable

# flag -> (parameter of portkit.cli.sockets.ls, value), as that Click command declares them.
LS_FLAGS: dict[str, tuple[str, bool]] = {
    "-a": ("show_all", True),
    "--all": ("show_all", True),
    "-4": ("only4", True),
    "-6": ("only6", True),
    "-p": ("processes", True),
    "--processes": ("processes", True),
    "-P": ("processes", False),
    "--no-processes": ("processes", False),
    "-i": ("info", True),
    "--info": ("info", True),
    "--all-netns": ("all_netns", True),
    "--json": ("as_json", True),
}
LS_JSON_FLAGS = LS_FLAGS  # the name the --json lane had when it was the only one


def ls_params(args: list[str]) -> dict[str, bool] | None:
    """The `ls` parameters of `args` when the lane can run them, else None."""
    if not args or args[0] != "ls":
        return None
    params: dict[str, bool] = {}
    for arg in args[1:]:
        found = LS_FLAGS.get(arg)
        if found is None:
            return None
        params[found[0]] = found[1]  # the last of -p/-P wins, as with Click
    return params


def ls_json_params(args: list[str]) -> dict[str, bool] | None:
    """`ls_params` for argument lists that ask for JSON, else None."""
    params = ls_params(args)
    return params if params is not None and params.get("as_json") else None


def port_command(args: list[str]) -> tuple[str, str, bool] | None:
    """(command, PORT argument, --json) for `explain PORT` and `who PORT`, flag before or after."""
    if not 2 <= len(args) <= 3 or args[0] not in ("explain", "who"):
        return None
    rest = args[1:]
    as_json = "--json" in rest
    if as_json:
        rest.remove("--json")
    if len(rest) != 1 or rest[0].startswith("-"):  # options, --help, "--": Click's to read
        return None
    return args[0], rest[0], as_json


def lane_for(args: list[str]) -> Callable[[], int | None] | None:
    """The Click-free way to run `args`, or None when only Click can. Running it gives the exit
    status, or None (nothing printed) when Click should run the command and report the error."""
    params = ls_params(args)
    if params is not None:
        return lambda: _run_ls(params)
    found = port_command(args)
    if found is None:
        return None
    command, port, as_json = found
    if command == "explain":
        return lambda: _run_explain(port, as_json)
    return lambda: _run_who(port, as_json)


def _run_ls(params: dict[str, bool]) -> int | None:
    from portkit.cli._lsquery import ls_query
    from portkit.sockets import list_sockets

    options = dict(params)
    all_netns = options.pop("all_netns", False)
    as_json = options.pop("as_json", False)
    try:
        query = ls_query(**options)  # type: ignore[arg-type]
        inventory = list_sockets(query, all_netns=all_netns)
    except KeyboardInterrupt:
        raise
    except Exception:  # Click runs the command again and words the error its own way
        return None
    if as_json:
        from portkit.cli._lsquery import emit_inventory_json

        emit_inventory_json(inventory)
    else:
        from portkit.cli._sockets_text import print_ls_table

        print_ls_table(inventory, query, show_netns=all_netns, info=options.get("info", False))
    return 0


def _use_registry_environment() -> None:
    """The registry files the environment names, as the Click group applies them."""
    from portkit.cli._environ import registry_paths_from

    paths = registry_paths_from(os.environ)
    if paths is not None:
        from portkit.registry import use_registry_paths

        use_registry_paths(paths)


def _run_explain(port: str, as_json: bool) -> int | None:
    try:
        _use_registry_environment()
        from portkit.explain import explain_port, parse_port_proto

        result = explain_port(*parse_port_proto(port))
    except KeyboardInterrupt:
        raise
    except Exception:
        return None
    from portkit.cli._about_text import print_explanation

    print_explanation(result, as_json)
    return 0


def _run_who(port_proto: str, as_json: bool) -> int | None:
    try:
        _use_registry_environment()
        from portkit.registry import default_registry
        from portkit.sockets import parse_port_proto, who_holds

        port, protocol = parse_port_proto(port_proto)
        use, inventory = who_holds(port, protocol, registry=default_registry())
    except KeyboardInterrupt:
        raise
    except Exception:
        return None
    from portkit.cli._sockets_text import print_port_use

    label = f"{port}/{protocol}" if protocol else str(port)
    status = print_port_use(use, inventory, label, as_json=as_json, do_kill=False, searched_all=False)
    return 0 if status is None else status


# errno values that mean "the output could not be written", not a bug in portkit
WRITE_ERRNOS = frozenset({5, 27, 28, 122})  # EIO, EFBIG, ENOSPC, EDQUOT


def failure_line(exc: Exception) -> str:
    """The one line portkit prints for an unexpected exception (Click's path and the lane's)."""
    text = " ".join(str(exc).split())
    if len(text) > 100:  # an exception's text can carry a whole input value
        text = f"{text[:60]} ... {text[-35:]} ({len(text)} chars)"
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return f"portkit: error: cannot write the output: {exc.strerror or text}"
    return (
        f"portkit: internal error: {type(exc).__name__}: {text} "
        "(run again with PORTKIT_DEBUG=1 for the traceback, and please report it)"
    )


def _config_may_record() -> bool:
    """Whether a config file exists (it may say `record = true`, which the lane does not do).

    One stat, where the Click path would parse the TOML (portkit.cli._record.config_path).
    """
    env = os.environ
    explicit = env.get("PORTKIT_CONFIG")
    if explicit:
        return True
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return os.path.exists(os.path.join(base, "portkit", "config.toml"))


def main() -> None:
    lane = None if _config_may_record() else lane_for(sys.argv[1:])
    if lane is not None:
        try:
            status = lane()
            if status is not None:
                sys.stdout.flush()
                sys.stderr.flush()
        except KeyboardInterrupt:
            sys.stderr.write("portkit: interrupted\n")
            sys.exit(130)
        except BrokenPipeError:
            sys.stderr.close()
            sys.exit(0)
        except OSError as exc:  # the output could not be written (a full disk): said as Click says it
            if os.environ.get("PORTKIT_DEBUG"):
                raise
            sys.stderr.write(failure_line(exc) + "\n")
            sys.stderr.flush()
            os._exit(1)  # not sys.exit: flushing the rest of stdout at exit would fail again
        if status is not None:
            # Everything is written and flushed: skip the interpreter's teardown, which frees
            # every module and object one by one (about 5 ms of the ~70 ms `ss -tan` takes
            # for 20,000 sockets) for nothing a user can see. Nothing in the lanes registers
            # atexit handlers or leaves files to close.
            os._exit(status)
    from portkit.cli.main import main as click_main

    click_main()
