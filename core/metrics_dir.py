"""The sample files of prometheus_client's multiprocess mode, in PROMETHEUS_MULTIPROC_DIR.

Every process writes `<kind>_<pid>.db` files there and a scrape sums them all. Two kinds of file must go:

- Files of an earlier run. A counter would add the old run's total to this one's, and a process that gets the pid a
  dead one had (pid 1 in a restarted container, always) reopens its files and continues from its values: a live
  gauge (open WebSocket connections) would then be off for good. `clear_stale_files()` deletes them when a server or
  worker starts, before it starts child processes.
- The live gauges of a process that died without its exit hook (SIGKILL, OOM): its open connections are gone with
  it. `forget_dead_processes()` drops them at every scrape. Counters and histograms of dead processes stay: totals
  never go down while the service runs.

Both assume the directory belongs to one server (or one Celery worker) and the processes it starts, all in one pid
namespace: a directory per container, e.g. a Kubernetes `emptyDir` mounted by that container only.

This module makes no metrics: importing core.metrics opens this process' sample files, and clearing must come first.
"""

import os
from pathlib import Path

from prometheus_client import multiprocess


def multiprocess_dir() -> Path | None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(directory) if directory else None


def _files_open_in_this_process() -> set[Path] | None:
    """What this process has open (Linux); None where /proc is not available."""
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return None
    paths = set()
    for descriptor in descriptors:
        try:
            paths.add(Path(os.readlink(f"/proc/self/fd/{descriptor}")))
        except OSError:
            continue
    return paths


def clear_stale_files() -> list[str]:
    """Delete every sample file this process is not writing to, and return their names. Call it once, when a
    server or worker starts and before it starts child processes: any other writer in the directory is then a
    leftover. Files this process already has open (metrics made by modules imported before this call) are kept."""
    directory = multiprocess_dir()
    if directory is None or not directory.is_dir():
        return []
    open_files = _files_open_in_this_process()
    own_suffix = f"_{os.getpid()}.db"
    removed = []
    for path in directory.glob("*.db"):
        keep = path.resolve() in open_files if open_files is not None else path.name.endswith(own_suffix)
        if not keep:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return sorted(removed)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_dead_processes() -> None:
    """Drop the live gauges of processes that no longer exist (what their exit hook would have done)."""
    directory = multiprocess_dir()
    if directory is None:
        return
    for path in directory.glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), str(directory))
