"""Errors a user can cause. The CLI prints them as one line and exits with code 2; bugs still raise."""

from __future__ import annotations

import errno

DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


class HarmoWAMError(Exception):
    """Base class for user-facing errors: a bad file, a missing artifact, an unreachable host.

    The message is complete on its own: it names the file, key or host and what to do.
    """


class RecipeError(HarmoWAMError):
    """A recipe that does not parse or validate. Names the file, the dotted key and what was expected."""

    def __init__(self, source: str, key: str | None, expected: str, got: object = None, *, show_got=True):
        self.source, self.key, self.expected = source, key, expected
        where = f"{source}: " + (f"key '{key}': " if key else "")
        tail = f" (got {_short(got)})" if show_got and got is not None else ""
        super().__init__(f"{where}{expected}{tail}")


class ParameterError(HarmoWAMError):
    """A bad value of a named parameter (`max_steps: must be at least 1, got 0`); the CLI names the option it
    came from instead (`--max-steps: ...`)."""

    def __init__(self, parameter: str, problem: str):
        self.parameter, self.problem = parameter, problem
        super().__init__(f"{parameter}: {problem}")

    def __reduce__(self):  # picklable across worker processes, like every other HarmoWAMError
        return (type(self), (self.parameter, self.problem))


class DatasetError(HarmoWAMError):
    """A dataset that is missing, locked, or not in the expected layout."""


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` reports a full disk: an OSError ENOSPC or EDQUOT, or a library's own error quoting one
    (safetensors raises `SafetensorError: ... I/O error: No space left on device (os error 28)`)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(text in str(err) for text in DISK_FULL_TEXT)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line (its class name when it has none): what a one-line error
    quotes of a library's multi-line one."""
    text = str(err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__
