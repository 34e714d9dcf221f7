"""The `portkit` console script (and `python -m portkit`): a Click-free fast lane for
`portkit ls [FLAGS] --json`, and the Click command line (portkit.cli.main) for everything else.

Why: on a host with tens of thousands of sockets, `portkit ls --all --json` is measured against
`ss -tan`, and importing Click costs about as much as reading the whole socket table. The lane
takes only argument lists made entirely of the value-less flags in LS_JSON_FLAGS; it asks the
same query builder the Click command uses (portkit.cli._lsquery) and prints the same JSON.
Anything else (other options, --help, tables, --watch) and any failure goes to Click, which
stays the reference: tests/test_sockets_entry.py parses every lane flag with both and compares.
"""

from __future__ import annotations

import os
import sys

# flag -> (parameter of portkit.cli.sockets.ls, value), as that Click command declares them.
LS_JSON_FLAGS: dict[str, tuple[str, bool]] = {
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


def ls_json_params(args: list[str]) -> dict[str, bool] | None:
    """The `ls` parameters of `args` when the fast lane can run them, else None."""
    if not args or args[0] != "ls":
        return None
    params: dict[str, bool] = {}
    for arg in args[1:]:
        found = LS_JSON_FLAGS.get(arg)
        if found is None:
            return None
        params[found[0]] = found[1]  # the last of -p/-P wins, as with Click
    return params if params.get("as_json") else None


def _run_ls_json(params: dict[str, bool]) -> bool:
    """Run `ls --json`; False (nothing printed) when Click should run it and report the error."""
    from portkit.cli._lsquery import emit_inventory_json, ls_query
    from portkit.sockets import list_sockets

    options = dict(params)
    all_netns = options.pop("all_netns", False)
    del options["as_json"]
    try:
        inventory = list_sockets(ls_query(**options), all_netns=all_netns)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        raise
    except Exception:  # Click runs the command again and words the error its own way
        return False
    emit_inventory_json(inventory)
    return True


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
    params = None if _config_may_record() else ls_json_params(sys.argv[1:])
    if params is not None:
        try:
            done = _run_ls_json(params)
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
        if done:
            # Everything is written and flushed (emit_inventory_json): skip the interpreter's
            # teardown, which frees every module and object one by one and costs about 5 ms
            # of the ~70 ms `ss -tan` takes for 20,000 sockets, for nothing a user can see.
            # Nothing in the lane registers atexit handlers or leaves files to close.
            os._exit(0)
    from portkit.cli.main import main as click_main

    click_main()
