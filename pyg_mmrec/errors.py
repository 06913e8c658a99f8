r"""Errors raised for bad user input.

Each error names the file (or option) at fault and the problem, in one line,
so that the command line can print it without a traceback.
"""
import argparse
import dataclasses
import math
import numbers
import os
import signal
import sys
import typing
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, NoReturn, Optional, Sequence

#: Exit status of a command given bad input (as argparse uses for bad
#: arguments).
EXIT_USAGE = 2


#: Largest learning rate :func:`check_config` accepts: far beyond any useful
#: rate, yet small enough that Adam's bias-corrected step stays finite in
#: float32 (a larger one stops training with an overflow in the optimiser
#: rather than as a diverged model).
MAX_LEARNING_RATE = 1e30


class MMRecError(Exception):
    r"""Base class of the errors caused by user input (files, options)."""


class FileProblem(MMRecError):
    r"""Base class of the errors about one file or folder: the message is
    ``'<path>: <problem>'``.

    Args:
        path (str): The file (or folder) at fault.
        problem (str): What is wrong with it.
    """
    def __init__(self, path: str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f'{self.path}: {problem}')

    def __str__(self) -> str:  # OSError's own formatting would differ
        return f'{self.path}: {self.problem}'


class DatasetError(FileProblem, ValueError):
    r"""A data set file is missing, unreadable or inconsistent."""


class ConfigError(MMRecError, ValueError):
    r"""An option or hyper-parameter override is invalid."""


class DivergenceError(MMRecError, ArithmeticError):
    r"""The training loss became NaN or infinite: the model diverged (most
    often from too high a learning rate). Raised at the first such batch,
    so that no NaN model is evaluated, selected or reported."""


class OutputError(FileProblem, OSError):
    r"""An output file or folder cannot be written (read-only location,
    a folder where a file is expected, ...)."""


class CheckpointError(FileProblem, ValueError):
    r"""A checkpoint file is missing, unreadable or does not fit the run."""


@contextmanager
def exit_on_input_error(prog: str) -> Iterator[None]:
    r"""For scripts: an :class:`MMRecError` raised inside the block (a
    missing file, a bad option) ends the program with one line on stderr,
    ``prog: error: ...``, and exit status 2, as ``pyg-mmrec`` does, instead
    of a traceback. Other exceptions are bugs and keep their traceback.

    .. code-block:: python

        if __name__ == '__main__':
            with exit_on_input_error('train.py'):
                main()
    """
    try:
        yield
    except MMRecError as e:
        print(f'{prog}: error: {e}', file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except BrokenPipeError:
        raise SystemExit(quiet_broken_pipe()) from None


def quiet_broken_pipe() -> int:
    r"""The exit status of a program whose reader of standard output went
    away (``| head``): a quiet stop, as for a command killed by
    ``SIGPIPE``. Standard output is sent to ``/dev/null`` first, since
    Python's final flush of it would raise again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor
        pass
    return 128 + getattr(signal, 'SIGPIPE', 13)


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    # argparse's, except that it leaves alone a help text that already
    # speaks of the default, and empty defaults.
    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        # By identity: 0 == False, and a default of 0 is worth showing.
        empty = any(action.default is v for v in (None, False))
        if ('default' in (action.help or '') or empty
                or action.default in ('', [])):
            return action.help
        return super()._get_help_string(action)


class OneLineArgumentParser(argparse.ArgumentParser):
    r"""An :class:`~argparse.ArgumentParser` whose errors (an unknown
    option, a value of the wrong type, :meth:`error` called by the program)
    raise a :class:`ConfigError` instead of printing the usage block and
    exiting: inside :func:`exit_on_input_error` (or ``pyg-mmrec``) they end
    as one line like every other bad input, pointing at ``--help``. Its
    help names each option's default."""
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault('formatter_class', _DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see '{self.prog} --help')")


def is_out_of_memory(err: BaseException) -> bool:
    r"""Whether :obj:`err` is an allocation failure: a :class:`MemoryError`,
    :class:`torch.OutOfMemoryError` (CUDA's caching allocator), the CPU
    allocator's :class:`RuntimeError` (worded differently on Windows), or
    an allocation failure the GPU libraries report as a plain
    :class:`RuntimeError` (``CUDA error: out of memory``,
    ``CUBLAS_STATUS_ALLOC_FAILED``, ``CUSPARSE_STATUS_ALLOC_FAILED``)."""
    message = str(err)
    return (isinstance(err, MemoryError)
            or type(err).__name__ == 'OutOfMemoryError'
            or any(text in message for text in _OUT_OF_MEMORY))


_OUT_OF_MEMORY = ("can't allocate memory", 'not enough memory',
                  'out of memory', '_STATUS_ALLOC_FAILED')


def describe(err: BaseException, path: Optional[str] = None) -> str:
    r"""One-line description of :obj:`err` (for wrapping library errors)."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else ''
    msg = msg or err.__class__.__name__
    return f'{path}: {msg}' if path else msg


def is_integer(value: Any) -> bool:
    r"""Whether :obj:`value` is a Python or NumPy integer (neither a
    ``bool`` nor a float, ``1.0`` included)."""
    return isinstance(value, numbers.Integral) and \
        not isinstance(value, bool)


def _int_fields(config: Any) -> List[str]:
    # The fields of the dataclass instance :obj:`config` annotated ``int``.
    if not dataclasses.is_dataclass(config):
        return []
    try:
        hints = typing.get_type_hints(type(config))
    except Exception:  # an unresolvable annotation: use the raw ones
        hints = {f.name: f.type for f in dataclasses.fields(config)}
    return [f.name for f in dataclasses.fields(config)
            if hints.get(f.name) in (int, 'int')]


def check_config(config: Any, *, at_least_one: Sequence[str] = (),
                 positive: Sequence[str] = (),
                 non_negative: Sequence[str] = (),
                 probability: Sequence[str] = (),
                 fraction: Sequence[str] = (),
                 learning_rate: Sequence[str] = (),
                 choices: Optional[Dict[str, Sequence[Any]]] = None) -> None:
    r"""Raises a :class:`ConfigError` naming the first field of the dataclass
    :obj:`config` that lies outside its range, so that a bad hyper-parameter
    fails where it is set instead of deep inside training (or, worse, not at
    all: a negative layer count silently propagates zero times).

    Every field annotated ``int`` must hold an integer (a Python or NumPy
    integer, not a ``bool`` nor a float such as ``1.5`` or ``2.0``), so
    that a fractional layer count fails here and not as a ``TypeError``
    inside :func:`range`.

    Args:
        config: The dataclass instance to check.
        at_least_one: Fields that must be integers :math:`\geq 1` (sizes,
            counts).
        positive: Fields that must be finite and :math:`> 0` (learning
            rates, temperatures).
        non_negative: Fields that must be finite and :math:`\geq 0` (loss
            weights, layer counts that may be zero).
        probability: Fields in :math:`[0, 1)` (dropout rates).
        fraction: Fields in :math:`(0, 1]` (keep rates).
        learning_rate: Fields that must be :math:`> 0` and at most
            :data:`MAX_LEARNING_RATE` (:math:`10^{30}`): Adam divides the
            rate by its bias correction (down to :math:`1 - \beta_1 =
            0.1`) and applies it in float32, which overflows near
            :math:`3.4 \cdot 10^{38}` with a bare :class:`RuntimeError`.
        choices: Fields that must take one of the listed values.
    """
    def fail(name: str, requirement: str) -> None:
        raise ConfigError(f'{name} must be {requirement}, got '
                          f'{getattr(config, name)!r}')

    for name in (*_int_fields(config), *at_least_one):
        if not is_integer(getattr(config, name)):
            fail(name, 'an integer')
    # Written as ``not (in range)`` so that NaN, which compares false with
    # everything, is rejected too.
    for name in at_least_one:
        if not getattr(config, name) >= 1:
            fail(name, '>= 1')
    for name in (*positive, *learning_rate):
        if not getattr(config, name) > 0:
            fail(name, '> 0')
    for name in non_negative:
        if not getattr(config, name) >= 0:
            fail(name, '>= 0')
    for name in (*positive, *non_negative, *learning_rate):
        if not math.isfinite(getattr(config, name)):
            fail(name, 'finite')
    for name in learning_rate:
        if getattr(config, name) > MAX_LEARNING_RATE:
            fail(name, f'at most {MAX_LEARNING_RATE:g}')
    for name in probability:
        if not 0 <= getattr(config, name) < 1:
            fail(name, 'in [0, 1)')
    for name in fraction:
        if not 0 < getattr(config, name) <= 1:
            fail(name, 'in (0, 1]')
    for name, allowed in (choices or {}).items():
        if getattr(config, name) not in allowed:
            fail(name, 'one of ' + ', '.join(repr(a) for a in allowed))
