"""The transformers Trainer's console output, moved into a logger.

By default a Trainer draws its own progress bar and prints every log entry as a raw dict (``{'loss': ...}``), which
breaks the progress display of a command that trains as one stage of many (``tale run``). ``log_to(trainer, logger)``
removes both and sends the entries to ``logger`` at INFO instead: on the console only with ``-v``, and in a run
directory's log file where the command attaches one (``log_file``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def log_to(trainer: Any, logger: logging.Logger) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

    class ToLogger(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if logs:
                logger.info("step %d, epoch %.2f: %s", state.global_step, state.epoch or 0.0, logs)

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(ToLogger())


@contextmanager
def log_file(path: Path, *names: str) -> Iterator[None]:
    """While inside, the INFO records of the loggers ``names`` are appended to ``path``."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
        handler.close()
