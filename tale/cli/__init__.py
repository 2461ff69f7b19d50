"""The ``tale`` command line: the group, its one error path, and the commands registered from one module per
family (``data``, ``predict``, ``calibrate``, ``curves``, ``export``, ``eval``, ``run``, ``train``, ``serve``; shared
options in ``common``). Commands parse options, build a config and call one library function; heavy imports happen
inside the commands so ``tale --help`` stays instant."""

from __future__ import annotations

import click


class _Group(click.Group):
    """Turns every error a user can fix (``reasoner.errors.TaleError``: a bad data row, a records directory of
    another run, a missing model part, a setting out of range) into one ``Error: ...`` line naming the file or
    option, and exit status 2, like a bad option; any other exception is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context):
        from reasoner.errors import TaleError

        try:
            return super().invoke(ctx)
        except TaleError as error:
            raise _input_error(str(error)) from error
        except click.UsageError:
            raise
        except click.ClickException as error:  # a command's own one-line error
            error.exit_code = 2
            raise


def _input_error(message: str) -> click.ClickException:
    error = click.ClickException(message)
    error.exit_code = 2
    return error


@click.group(cls=_Group)
@click.version_option(package_name="tale-toolkit")
def main() -> None:
    """TALE: token-budget-aware LLM reasoning. Search budgets, learn to predict them, and reason within them."""


def _register() -> None:
    from tale.cli.calibrate import calibrate
    from tale.cli.curves import frontier, train_curves
    from tale.cli.data import build, elasticity, generate, merge
    from tale.cli.eval import ablate, evaluate
    from tale.cli.export import estimate, export
    from tale.cli.predict import eval_predictor, train_predictor
    from tale.cli.run import run
    from tale.cli.serve import serve
    from tale.cli.train import rebuild_reasoner, train_reasoner

    for command in (generate, build, merge, elasticity, run, train_predictor, eval_predictor, calibrate, train_curves, frontier, export, estimate,
                    evaluate, ablate, train_reasoner, rebuild_reasoner, serve):
        main.add_command(command)


_register()

if __name__ == "__main__":
    main()
