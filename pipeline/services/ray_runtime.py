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
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from vilactl.base.errors import VilactlError
from vilactl.base.progress import Phase

OOM_RETRIES = 3


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
    if address:
        check_reachable(address)
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        if address:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        else:
            # Ray retries a task its memory monitor killed forever by default (a task that can
            # never fit then loops, killing and printing); a few tries, then one clear error.
            # address="local": a new Ray for this command, even if another runs on the machine
            ray.init(address="local", include_dashboard=False, logging_level="ERROR",
                     log_to_driver=False, _node_ip_address="127.0.0.1",
                     _system_config={"task_oom_retries": OOM_RETRIES})
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = address or "a local Ray"
        raise VilactlError(f"cannot start or reach {where}: {str(e).splitlines()[0]}") from e
    _condense_raylet_messages()
    if callable(sigterm) and threading.current_thread() is threading.main_thread():
        # ray.init replaces SIGTERM's handler (sys.exit; its C++ handler prints a stack dump):
        # vilactl's own goes back, so SIGTERM ends the command like Ctrl-C (cli/__init__.py)
        signal.signal(signal.SIGTERM, sigterm)
    try:
        yield
    finally:
        if address:
            remove_helper_actors()
        ray.shutdown()


# Detached actors Ray Data starts on a cluster and never stops (named, shared by every job that
# uses Ray Data there): its stats, the actor-location tracker, the autoscaling coordinator, …
RAY_DATA_HELPERS = frozenset({"datasets_stats_actor", "ActorLocationTracker",
                              "AutoscalingCoordinator", "AutoscalingRequester",
                              "DataUsageCollectionActor", "datasets_stats_summary_actor",
                              "mem_tracing_actor"})


def remove_helper_actors(wait_s: float = 10.0) -> list[str]:
    """Stop the detached actors this command left on a cluster: those its job created (vilactl
    makes none itself, so they are Ray Data's) and Ray Data's named helpers an earlier job
    left. Only when no other driver is connected — another job may be using the shared
    helpers. Returns the names stopped; best effort, silent: the command's outcome stands."""
    try:
        import ray
        from ray._private import state

        me = ray.get_runtime_context().get_job_id()
        if any(not j.get("IsDead") and j.get("JobID") != me for j in state.jobs()):
            return []
        doomed = {a["ActorID"]: a.get("Name") or a.get("ActorClassName") for a in
                  state.actors(actor_state_name="ALIVE").values()
                  if a.get("IsDetached") and (a.get("JobID") == me
                                              or a.get("Name") in RAY_DATA_HELPERS)}
        core = ray._private.worker.global_worker.core_worker
        for actor_id in doomed:
            core.kill_actor(ray.ActorID.from_hex(actor_id), True)
        deadline = time.monotonic() + wait_s
        while doomed and time.monotonic() < deadline:
            alive = state.actors(actor_state_name="ALIVE")
            if not any(a in alive for a in doomed):
                break
            time.sleep(0.2)
        return sorted(doomed.values())
    except Exception:  # noqa: BLE001 — cleanup must never turn a result into a traceback
        return []


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """One line within `timeout` when nothing listens at a `host:port` Ray address (Ray itself
    retries a dead address for minutes, printing C++ warnings). `auto` and names without a
    port are left to Ray."""
    import socket

    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise VilactlError(f"cannot reach Ray at {address}: {reason} (is a Ray head running "
                           "there? start one with `ray start --head`, or leave --ray-address "
                           "unset for a local Ray)") from e


def _condense_raylet_messages() -> None:
    """Ray prints every error its raylet publishes on the driver's stdout — for a worker its
    memory monitor killed, ~40 lines of diagnostics and advice, for each kill. Keep one line:
    the task is retried, and a final failure is reported by the command itself.

    (Ray offers no switch for this: `log_to_driver=False` silences worker output only, so the
    printer its error listener calls is wrapped.)"""
    import ray._private.worker as ray_worker

    original = ray_worker.print_to_stdstream
    if getattr(original, "vilactl", False):
        return

    def one_line(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            return original(data, ignore_prefix)
        text = "\n".join(data.get("lines") or [])
        if "memory" in text.lower() and "kill" in text.lower():
            print(f"warning: Ray killed a worker for lack of memory (its task is tried up to "
                  f"{OOM_RETRIES} more times on a local Ray)", file=sys.stderr, flush=True)
        elif "retries remaining" not in text:  # a retry notice: the outcome is reported anyway
            first = next((t.strip() for t in text.splitlines() if t.strip()), "")
            print(f"Ray: {first[:200]}", flush=True)   # stdout, where Ray prints it

    one_line.vilactl = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = one_line


def run_tasks(fn: Callable, calls: list[tuple[str, tuple]], *, num_cpus: float, retries: int,
              describe: str, on_done: Callable[[str, Any], str] | None = None,
              quiet: bool = False, memory: int | None = None,
              rows_of: Callable[[Any], int] | None = None, console=None,
              unit: str = "shards", retry_exceptions: bool = True
              ) -> tuple[dict[str, Any], dict[str, str]]:
    """Run fn(*args) as Ray tasks, one per (name, args); returns (results, errors) by name.

    A task whose worker dies is retried `retries` times by Ray, and so is one that raises unless
    `retry_exceptions` is False; one that still fails is reported in `errors` (the others go
    on). `memory` (bytes) is what one task needs at most: Ray then runs
    only as many at once as a node's memory holds, instead of starting them all and killing
    some (see `task_memory`). `on_done(name, result)` returns the progress line's status and
    `rows_of(result)` the rows it covered (for rows/s)."""
    import ray

    opts: dict[str, Any] = {"num_cpus": num_cpus, "max_retries": retries,
                            "retry_exceptions": retry_exceptions}
    if memory:
        opts["memory"] = task_memory(memory)
    remote = ray.remote(**opts)(fn)
    pending = {remote.remote(*args): name for name, args in calls}
    results, errors = {}, {}
    with Phase(console, describe, len(pending), unit, quiet=quiet) as progress:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                name = pending.pop(ref)
                try:
                    results[name] = ray.get(ref)
                except Exception as e:  # noqa: BLE001 — reported per task, the rest go on
                    errors[name] = error_line(e)
                status = on_done(name, results.get(name)) if on_done else ""
                rows = rows_of(results[name]) if rows_of and name in results else 0
                progress.advance(rows=rows, status=status)
    return results, errors


def task_memory(wanted: int) -> int:
    """`wanted` bytes, capped at 80% of the largest node's memory resource: a request no node
    can grant would leave the task pending forever."""
    import ray

    nodes = [n.get("Resources", {}).get("memory", 0) for n in ray.nodes() if n.get("Alive")]
    cap = int(0.8 * max(nodes, default=0))
    return max(1, min(int(wanted), cap)) if cap else int(wanted)


def call(fn: Callable, *args: Any) -> Any:
    """Task body for run_tasks(call, …): lets one remote function run any module function."""
    return fn(*args)


def error_line(e: BaseException) -> str:
    """One line for an error that came out of Ray."""
    import ray

    if isinstance(e, ray.exceptions.OutOfMemoryError):  # Ray's text is ~40 lines of advice
        return ("Ray killed the task for lack of memory (node above its memory threshold) and "
                "its retries too; free memory or lower the parallelism")
    if isinstance(e, ray.exceptions.WorkerCrashedError):
        return "the task's worker process died (killed, or out of memory)"
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
