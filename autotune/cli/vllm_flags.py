"""A click command for ``tune`` and ``serve``, whose vLLM flags come after ``--``."""

from __future__ import annotations

import click

from autotune.engine.safety import KNOWN_FLAGS
from autotune.masking import is_secret_flag


class VllmFlagsCommand(click.Command):
    """A command that takes vLLM's flags after ``--``: an unknown option is one line that says
    how to pass it through (``-- --port 8000``), as a vLLM user would type it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given_args = list(args)  # click's parser consumes the list it is given
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            flag = exc.option_name
            if not flag.startswith("--"):
                raise
            args = given_args
            given = next((a for a in args if a == flag or a.startswith(flag + "=")), flag)
            where = args.index(given) if given in args else -1
            value = args[where + 1] if given == flag and 0 <= where < len(args) - 1 else ""
            if is_secret_flag(flag):
                given, value = flag, "VALUE"
            passed = given if not value or value.startswith("-") else f"{given} {value}"
            vllm = flag.replace("_", "-") in KNOWN_FLAGS
            close = f"; or did you mean {exc.possibilities[0]}?" if exc.possibilities else ""
            raise click.UsageError(
                f"autotune has no option {flag}; pass vLLM's flags after --, e.g. "
                f"autotune {ctx.info_name} MODEL [options] -- {passed}{'' if vllm else close}",
                ctx,
            ) from None
