"""Ray for vilactl commands: connect (or start a local Ray), run tasks with retries and progress.

`--ray-address` / RAY_ADDRESS names a cluster; unset starts a local Ray for the command and
stops it afterwards. Workers must import vilactl (install it on every node) and see the
workspace at the same path (a shared filesystem). Tasks take a fraction of a CPU: download and
scoring wait on the network or one accelerator, and on a 2-CPU machine whole-CPU tasks plus the
driver have deadlocked Ray.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vilactl.base.errors import VilactlError


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:
        # A local Ray binds to loopback only (Ray otherwise advertises the machine's network
        # address); the variable must be set before Ray is imported, and workers inherit it.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        yield
        return
    try:
        if address:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        else:
            ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                     _node_ip_address="127.0.0.1")
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = address or "a local Ray"
        raise VilactlError(f"cannot start or reach {where}: {str(e).splitlines()[0]}") from e
    try:
        yield
    finally:
        ray.shutdown()


def run_tasks(fn: Callable, calls: list[tuple[str, tuple]], *, num_cpus: float, retries: int,
              describe: str, on_done: Callable[[str, Any], str] | None = None,
              quiet: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """Run fn(*args) as Ray tasks, one per (name, args); returns (results, errors) by name.

    A task that raises is retried `retries` times by Ray; one that still fails is reported in
    `errors` (the others go on). `on_done(name, result)` returns the progress line's status."""
    import ray

    remote = ray.remote(num_cpus=num_cpus, max_retries=retries, retry_exceptions=True)(fn)
    pending = {remote.remote(*args): name for name, args in calls}
    results, errors = {}, {}
    progress = Progress(TextColumn(f"[bold]{describe}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                        disable=quiet, transient=False)
    with progress:
        task = progress.add_task(describe, total=len(pending), status="")
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                name = pending.pop(ref)
                try:
                    results[name] = ray.get(ref)
                except Exception as e:  # noqa: BLE001 — reported per task, the rest go on
                    errors[name] = _cause(e)
                status = on_done(name, results.get(name)) if on_done else ""
                progress.update(task, advance=1, status=status)
    return results, errors


def call(fn: Callable, *args: Any) -> Any:
    """Task body for run_tasks(call, …): lets one remote function run any module function."""
    return fn(*args)


def _cause(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    text = str(cause).strip().splitlines()
    return text[-1] if text else type(cause).__name__


class Rate:
    """Running totals for a progress line: images/s and success rate."""

    def __init__(self) -> None:
        self.t0, self.ok, self.tried = time.monotonic(), 0, 0

    def add(self, stats: dict | None) -> str:
        if stats:
            self.ok += stats.get("succeeded", 0)
            self.tried += stats.get("attempted", 0)
        dt = max(time.monotonic() - self.t0, 1e-9)
        share = self.ok / self.tried if self.tried else 0.0
        return f"{self.ok / dt:,.0f} img/s · {share:.1%} ok"
