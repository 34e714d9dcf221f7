"""The `portkit` command: a lazy group, so each command imports only what it uses.

Exit status: 0 ok, 1 the check found something (or a runtime failure), 2 usage error,
3 the answer is uncertain (`fw check`: a match portkit cannot decide splits the outcome),
130 interrupted, 143 terminated while cleaning up. Errors are one line on stderr of at most
MAX_ERROR_LINE characters, never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from typing import Any

import click

from portkit import __version__
from portkit.cli._environ import registry_paths_from
from portkit.errors import QUOTE_LIMIT, PortkitError, Terminated, quote

# name -> "module:attribute"; a command's module is imported only when it runs.
COMMANDS: dict[str, str] = {
    "explain": "portkit.cli.about:explain",
    "lookup": "portkit.cli.about:lookup",
    "ranges": "portkit.cli.about:ranges",
    "free-port": "portkit.cli.about:free_port",
    "registry": "portkit.cli.registry:registry",
    # socket inventory (portkit.sockets)
    "overview": "portkit.cli.sockets:overview",
    "ls": "portkit.cli.sockets:ls",
    "who": "portkit.cli.sockets:who",
    # scanner and service detection (portkit.scan, portkit.services)
    "scan": "portkit.cli.scan:scan",
    # firewall (portkit.firewall)
    "fw": "portkit.cli.firewall:fw",
    # live events and scan detection (portkit.watch)
    "watch": "portkit.cli.watch:watch",
    # exposure audit against a policy (portkit.audit)
    "audit": "portkit.cli.audit:audit",
    # port forwarder (portkit.forward)
    "forward": "portkit.cli.forward:forward",
    # port forwarding behind NAT (portkit.nat)
    "nat": "portkit.cli.nat:nat",
    # why a port cannot be reached or bound (portkit.diagnose)
    "diagnose": "portkit.cli.diagnose:diagnose",
    # the exposure ledger and comparisons (portkit.ledger, portkit.diff)
    "history": "portkit.cli.ledger:history",
    "ledger": "portkit.cli.ledger:ledger",
    "diff": "portkit.cli.ledger:diff",
}
DEFAULT_COMMAND = "overview"


def _available(target: str) -> bool:
    """Whether a command's module exists (capabilities land one at a time)."""
    return importlib.util.find_spec(target.partition(":")[0]) is not None


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, target in COMMANDS.items() if _available(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not _available(target):
            return None
        module_name, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(
    cls=LazyGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(version=__version__, prog_name="portkit")
@click.pass_context
def cli(ctx: click.Context) -> Any:
    """portkit: what a port is, who holds it, what is reachable, what the firewall does.

    With no command, shows this host's overview.
    """
    paths = registry_paths_from(os.environ)
    if paths is not None:
        from portkit.registry import use_registry_paths

        use_registry_paths(paths)
    if ctx.invoked_subcommand is None:
        command = cli.get_command(ctx, DEFAULT_COMMAND)
        assert command is not None
        return ctx.invoke(command)
    return None


# A quoted run of input longer than quote() would show, as click words its messages
# ("Invalid value for '--backend': 'xxxx...'") and any message that did not use quote().
_LONG_QUOTED = re.compile(rf"'([^'\n]{{{QUOTE_LIMIT - 1},}})'")
MAX_ERROR_LINE = 200


def _one_line(message: str, *, from_click: bool = False) -> str:
    """An error message as one line: whitespace collapsed; long quoted runs shortened by quote()
    in click's messages (portkit's own already quote with it) or when the line is longer than
    MAX_ERROR_LINE; then the middle cut out of what is still too long (its end says what is
    accepted, so the end stays)."""
    text = " ".join(message.split())
    if from_click or len(text) > MAX_ERROR_LINE:  # click quotes the user's values in full
        text = _LONG_QUOTED.sub(lambda m: quote(m.group(1)), text)
    if len(text) > MAX_ERROR_LINE:
        text = f"{text[: MAX_ERROR_LINE - 90]} ... {text[-85:]}"
    return text


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script and of `python -m portkit`."""
    try:
        status = cli.main(args=argv, prog_name="portkit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        status = exc.exit_code
    except click.exceptions.Abort:
        click.echo("portkit: interrupted", err=True)
        status = 130
    except KeyboardInterrupt:
        click.echo("portkit: interrupted", err=True)
        status = 130
    except Terminated:
        click.echo("portkit: terminated", err=True)
        status = 143
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "portkit"
        line = f"{where}: error: {exc.format_message()} (see '{where} --help')"
        click.echo(_one_line(line, from_click=True), err=True)
        status = 2
    except click.ClickException as exc:
        click.echo(_one_line(f"portkit: error: {exc.format_message()}", from_click=True), err=True)
        status = exc.exit_code
    except PortkitError as exc:
        click.echo(_one_line(f"portkit: error: {exc}"), err=True)
        status = exc.exit_status
    except BrokenPipeError:
        sys.stderr.close()
        status = 0
    except Exception as exc:  # a bug: say so in one line; PORTKIT_DEBUG=1 shows the traceback
        if os.environ.get("PORTKIT_DEBUG"):
            raise
        from portkit.cli.entry import failure_line

        click.echo(failure_line(exc), err=True)
        status = 1
    sys.exit(status if isinstance(status, int) else 0)
