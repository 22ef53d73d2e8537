"""What every stage's command line shares."""

from __future__ import annotations

import functools

import click


def friendly_errors(func):
    """Bad input is the user's to fix: one clear line (exit 1), no traceback.

    ValueError and FileNotFoundError carry messages that name the bad value or file.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (ValueError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper
