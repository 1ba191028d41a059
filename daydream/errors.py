"""`UserError`: a mistake the person running the workflow fixes from the message alone.

Its message names the file, the row or key, and the fix, so the terminal shows that message
once, as `ClassName: message`, without the Python frames and the `RuleException` /
`InputFunctionException` wrappers Snakemake adds around an exception raised in a `run:` block,
an input function or the Snakefile itself (`short_user_error`, applied by the terminal logger
plugin, `daydream.terminal`). Snakemake's complete log keeps the full traceback (it logs it
at debug level before the error). Any other exception is a bug and keeps its frames.
"""

from __future__ import annotations

import re


class UserError(Exception):
    """Bad input or a refused run: the message says everything (file, row or key, fix)."""


# A document's failure is no user error, but its one-line message says everything as well
# (calls.LLMCallError, documents.DocumentError, run.BudgetReached): shown the same way.
COMPLETE_MESSAGES = frozenset({"LLMCallError", "DocumentError", "BudgetReached"})


def user_error_names() -> frozenset[str]:
    """The class names shown without frames: every UserError subclass defined so far, and
    COMPLETE_MESSAGES."""
    names, todo = set(COMPLETE_MESSAGES), [UserError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names)


# Snakemake's formats (snakemake.exceptions.format_error and InputFunctionException).
_AT = re.compile(r'^(?:RuleException:\n)?(?P<cls>\w+)(?: in rule \S+)? in file "[^"\n]*", line \d+:\n'
                 r'(?P<msg>.*?)(?=\n  File "|\Z)', re.S)
_INPUT_FUNCTION = re.compile(r'^InputFunctionException in rule (?P<rule>\S+) in file "[^"\n]*", line \d+:\n'
                             r'Error:\n  (?P<cls>\w+): (?P<msg>.*?)\nWildcards:', re.S)


def short_user_error(text: str, names: frozenset[str] | None = None) -> str | None:
    """`ClassName: message` when Snakemake's report `text` is of a UserError, else None."""
    names = user_error_names() if names is None else names
    found = _INPUT_FUNCTION.match(text) or _AT.match(text)
    if found is None or found.group("cls") not in names:
        return None
    message = found.group("msg").strip()
    return f"{found.group('cls')}:{chr(10) if message.startswith('- ') else ' '}{message}"
