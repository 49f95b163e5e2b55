"""Errors that carry one user-facing line.

`VilactlError` is what the CLI turns into `error: <message>` and a non-zero exit; anything else
escaping the CLI is a bug and keeps its traceback. It lives in base/, the bottom layer that
catalog/, curation/, pipeline/ and train/ may all import.
"""


class VilactlError(Exception):
    """A problem with the user's input or environment, stated in one line."""


class RecordError(VilactlError):
    """A record (row, document, sample) that does not match its format."""
