"""The `pixdiff` command line: the app, its one-line error reporting, and the commands of
`pixdiff.commands` registered on it. Commands import torch lazily, so `--help` stays instant."""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from pixdiff.about import DESCRIPTION
from pixdiff.commands import bench, convert, data, edit, evaluate, recipes, sample, sweep, train


class OneLineErrors(TyperGroup):
    """Every command's errors and warnings as one line each: a bad option value, a missing argument
    (Typer checks types, ranges and choices as it parses) -> `error: ...`, exit 2."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):  # noqa: ANN201 (click's signature)
        import warnings

        with warnings.catch_warnings():
            warnings.showwarning = lambda message, *_, **__: typer.secho(
                f"warning: {message}", fg=typer.colors.YELLOW, err=True)
            try:
                code = super().main(*args, standalone_mode=False, **kwargs)
            except typer.Abort:  # click's word for a KeyboardInterrupt: the second Ctrl-C, or one outside training
                code = 130
            except typer.TyperException as e:  # click's UsageError / BadParameter
                if type(e).__name__ != "NoArgsIsHelpError":  # the help text was the answer
                    typer.secho(f"error: {' '.join(e.format_message().split())}", fg=typer.colors.RED, err=True)
                code = getattr(e, "exit_code", 2)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def group(help_text: str) -> typer.Typer:
    return typer.Typer(no_args_is_help=True, help=help_text)


app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, cls=OneLineErrors,
                  help=DESCRIPTION)
app.command()(recipes.info)
app.command("ls")(recipes.list_recipes)
app.command()(convert.convert)
app.command()(train.train)
app.command()(sample.sample)
for command in (edit.edit, edit.inpaint, edit.invert, edit.interpolate):
    app.command()(command)
app.command("eval")(evaluate.evaluate)
app.command("eval-sanity")(evaluate.sanity)
app.command("eval-readout")(evaluate.readout)
app.command()(sweep.sweep)

bench_app = group("Speed: sampling latency, sampling/training throughput, data feed.")
bench_app.command()(bench.latency)
bench_app.command()(bench.throughput)
bench_app.command("data")(bench.data_feed)
app.add_typer(bench_app, name="bench")

data_app = group("Training data: build the preprocessed cache, or export it as a reference batch.")
data_app.command()(data.prepare)
data_app.command()(data.export)
app.add_typer(data_app, name="data")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
