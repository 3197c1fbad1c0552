"""Errors that reach the user as one or two lines: a message and, where one helps, a hint."""

from __future__ import annotations


class TrtpipeError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class RecipeError(TrtpipeError):
    """The recipe or the command line is wrong: nothing ran (exit 2)."""

    exit_code = 2


class StageError(TrtpipeError):
    """A stage could not produce its outputs (exit 1)."""


class BuildError(StageError):
    """A backend could not build a model. `nodes`: the ONNX nodes of the layer it failed on, where it names one."""

    def __init__(self, message: str, hint: str | None = None, nodes: list[str] | None = None):
        super().__init__(message, hint)
        self.nodes = nodes or []


def did_you_mean(word: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def needs(package: str, extra: str | None = None) -> str:
    """The pip command that installs `package` for trtpipe."""
    return f"pip install 'trtpipe[{extra}]'" if extra else f"pip install {package}"


def one_line(e: BaseException) -> str:
    """`Type: first line of the message`, for errors raised by libraries."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__
