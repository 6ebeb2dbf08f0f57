"""What the command-line tools share: the user-error type, finite number options, and OS errors
reported as one sentence.

Every tool ends a mistake with one `Error:` sentence and a non-zero exit status, never a
traceback; nothing it already wrote is lost or left half-written (docs/ERRORS.md).
"""

import errno
import functools
import math
import os
import re
import sys

import click


class UserError(click.ClickException):
    """A mistake in the command line or the inputs, reported as one sentence."""


class Command(click.Command):
    """click.Command whose mistakes print one line, `Error: ...`, on stderr (no usage block).

    click's own option errors print the usage and a "Try --help" line before the message; a
    scheduler's log or a script reading stderr should see the one sentence that matters.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as err:
            click.echo(f'Error: {err.format_message()}', err=True)
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo('Aborted!', err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (`x > 0` holds for inf, and nan passes any check)."""

    name = 'float'

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f'{number} is not a finite number.', param, ctx)
        return number


FINITE_FLOAT = FiniteFloatRange()


WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def parse_range(text):
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]."""
    values = []
    for part in str(text).split(','):
        part = part.strip()
        m = re.fullmatch(r'(\d+)-(\d+)', part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f'range "{part}" ends before it starts')
            values.extend(range(lo, hi + 1))
        elif re.fullmatch(r'\d+', part):
            values.append(int(part))
        else:
            raise ValueError(f'"{part}" is not a number or a range like 0-7')
    return values


def save_image(image, path):
    """Write a PIL image atomically (a temporary file next to `path`, then a rename)."""
    tmp = f'{path}.tmp{os.getpid()}{os.path.splitext(path)[1]}'
    try:
        image.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def describe_os_error(err, doing=None):
    """One sentence for an OSError: which file, and the system's reason (disk full, read-only, ...)."""
    doing = doing or ('write' if err.errno in WRITE_ERRNOS else 'open')
    what = err.filename if err.filename is not None else 'a file'
    reason = err.strerror or str(err)
    hint = {errno.ENOSPC: 'free some space', errno.EDQUOT: 'free some space',
            errno.EROFS: 'choose a writable place', errno.EACCES: 'choose a writable place',
            errno.EPERM: 'choose a writable place', errno.EFBIG: 'free some space or raise the file-size limit'}
    fix = hint.get(err.errno)
    return f'cannot {doing} {what}: {reason}' + (f'; {fix} and run the command again.' if fix else '.')


def os_errors_as_user_errors(main):
    """Decorate a click command's function: an OSError that escapes it becomes one `Error:` sentence."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except OSError as err:
            raise UserError(describe_os_error(err)) from None
    return wrapper


def makedirs_or_fail(path, flag):
    """os.makedirs(path, exist_ok=True) for an output option, failing in one sentence naming the flag."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f'{flag}={path} is a file; give a directory.')
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise UserError(f'cannot create {flag}={path}: {err.strerror or err}; choose a writable place.') from None
