r"""Errors raised for bad user input.

Each error names the file (or option) at fault and the problem, in one line,
so that the command line can print it without a traceback.
"""
from typing import Optional


class MMRecError(Exception):
    r"""Base class of the errors caused by user input (files, options)."""


class DatasetError(MMRecError, ValueError):
    r"""A data set file is missing, unreadable or inconsistent.

    Args:
        path (str): The file (or folder) at fault.
        problem (str): What is wrong with it.
    """
    def __init__(self, path: str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f'{self.path}: {problem}')


class ConfigError(MMRecError, ValueError):
    r"""An option or hyper-parameter override is invalid."""


class CheckpointError(MMRecError, ValueError):
    r"""A checkpoint file is missing, unreadable or does not fit the run."""
    def __init__(self, path: str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f'{self.path}: {problem}')


def describe(err: BaseException, path: Optional[str] = None) -> str:
    r"""One-line description of :obj:`err` (for wrapping library errors)."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else ''
    msg = msg or err.__class__.__name__
    return f'{path}: {msg}' if path else msg
