"""Errors that carry one user-facing line.

`VilactlError` is what the CLI turns into `error: <message>` and a non-zero exit; anything else
escaping the CLI is a bug and keeps its traceback. It lives in base/, the bottom layer that
catalog/, curation/, pipeline/ and train/ may all import.
"""


class VilactlError(Exception):
    """A problem with the user's input or environment, stated in one line."""


class RecordError(VilactlError):
    """A record (row, document, sample) that does not match its format."""


class Stopped(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM, as Slurm and Kubernetes preempt; or SIGINT,
    Ctrl-C) — a KeyboardInterrupt, so every job's cleanup path runs (temp removed, run marked
    failed with this line), and the CLI exits 128 + signal number with this one line."""

    def __init__(self, signum: int, message: str = ""):
        import signal

        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(message or f"terminated by {name}")
