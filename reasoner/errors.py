"""The one base class for errors a user can fix: a bad data file, option, directory, setting or server.

The CLI turns every ``TaleError`` into one ``Error: ...`` line and exit status 2 (``tale.cli``); any other
exception is a bug and keeps its traceback. Subclasses keep their old built-in base too (``ValueError`` or
``RuntimeError``), so library callers that caught those still do. Standard library only: the torch-free
runtime and the gateway raise these as well.
"""

from __future__ import annotations


class TaleError(Exception):
    """An error a user can fix; its message names the file, line and field, or the option, at fault."""


class ConfigError(TaleError, ValueError):
    """A setting that cannot be used (out of range, contradicting another), named as its option."""


class MissingInputError(TaleError, FileNotFoundError):
    """A file or directory the command needs is not there, or is not what it should be."""


class OutputExistsError(TaleError, FileExistsError):
    """An output directory that must be new or empty is not."""


class InputError(TaleError, ValueError):
    """Input that cannot be used as it is: records with no usable example, too few records for a risk,
    a file of the wrong kind."""
