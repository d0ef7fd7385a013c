"""Episodes in parallel simulator processes, and shares of a run for cluster jobs.

    with WorkerPool(2, "harmowam_core.evaluation.runner:EvalSession", (bundle, ...)) as pool:
        for key, result in pool.run(jobs):           # jobs: [(key, payload), ...]; results in completion order
            ...

Each worker is a *spawned* process (not forked: MuJoCo's EGL context and torch's thread pools do not survive
a fork) that builds its state once, `setup(*args)` (an "module:callable" name, resolved in the worker after its
environment is set), then runs `state.run(payload)` for every job it takes from one shared queue and
`state.close()` at the end. A worker gets `threads` torch threads (by default its share of the cores this
process may use) and the same share of Mesa's software renderer (LP_NUM_THREADS); MUJOCO_GL is inherited
(egl unless set). Workers ignore Ctrl-C: the parent decides, and `close()` ends them. A job that raises comes
back as a `WorkerError` naming its key; a worker that dies (a crash in native code) likewise names the job
it was running.

Spawned processes re-import the main module: a script that starts workers (`collect(..., workers=2)`,
`evaluate(..., workers=2)`) must do so under `if __name__ == "__main__":`, as with any multiprocessing code.

Determinism: a job's result must depend on its payload only (the simulator reseeds every episode, the policy
resets its generator). CPU kernels can give results that depend on the thread count (oneDNN's convolutions
differ by about 1e-7 between 1 and 2 threads; with oneDNN off, 1, 2 and 4 threads agree but 3 do not), and a
closed loop amplifies such differences. So `deterministic_cpu()` runs closed-loop episodes in the simulator
with oneDNN off and one torch thread, in this process or in any worker: 1 or N workers give the same actions.
Parallelism comes from the workers (on 2 cores a plan's second thread gained little beside the renderer).
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import multiprocessing.connection
import os
import queue
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from harmowam_core.errors import HarmoWAMError, ParameterError

POLL_SECONDS = 0.5


class WorkerError(HarmoWAMError):
    """A job failed in a worker, or a worker died. `key`: the job's key (e.g. the episode's seed), None when the
    worker died outside any job; `trace`: the worker's traceback, where there was one."""

    def __init__(self, key: Any, message: str, trace: str = ""):
        super().__init__(message)
        self.key, self.trace = key, trace

    def save_trace(self) -> str:
        """Write the traceback to a file in the temporary folder and return its path ("" without one)."""
        if not self.trace:
            return ""
        fd, path = tempfile.mkstemp(prefix="harmowam-worker-", suffix=".log", text=True)
        with os.fdopen(fd, "w") as f:
            f.write(self.trace)
        return path

    def describe(self) -> str:
        """The one-line message, naming the file that holds the worker's traceback."""
        path = self.save_trace()
        return f"{self}" + (f" (traceback in {path})" if path else "")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, so containers and `taskset` are honoured)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS has no affinity mask
        return max(1, os.cpu_count() or 1)


WORKER_MEMORY = 600 * 2**20  # bytes a simulator worker needs besides its models (robosuite, Mesa, buffers)


def available_memory() -> int:
    """Bytes of memory available now (Linux: MemAvailable), or 0 where unknown."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def default_workers(jobs: int, model_bytes: int = 0) -> int:
    """`--workers` when not given: the cores this process may use, capped by the number of jobs and by the
    workers that fit in the memory available now, each holding `model_bytes` of models (loaded as float32)."""
    workers = min(available_cores(), jobs)
    memory = available_memory()
    if memory:
        workers = min(workers, memory // (WORKER_MEMORY + model_bytes))
    return max(1, workers)


def check_workers(workers: int | None, jobs: int, simulator: bool = True, model_bytes: int = 0) -> int:
    """The worker count to use for `jobs` episodes (`workers` None: the default, see `default_workers`); a
    station that is not the simulator (the real one, or an operator's teleoperation) runs one episode at a time."""
    if workers is not None and workers < 1:
        raise ParameterError("workers", f"must be at least 1, got {workers}")
    if not simulator:
        if workers is not None and workers > 1:
            raise ParameterError("workers", "applies to the simulator; the real station runs one episode at a time")
        return 1
    if workers is None:
        return default_workers(jobs, model_bytes)
    return min(workers, max(1, jobs))


def bundle_bytes(bundle) -> int:
    """Memory a worker holding a bundle's models needs: twice the size of its weight files (the weights, upcast
    to float32 where stored in bf16, and the activations of a plan)."""
    from pathlib import Path

    files = [f for f in Path(bundle).rglob("*") if f.suffix in (".safetensors", ".bin", ".pt")]
    return 2 * sum(f.stat().st_size for f in files)


def parse_shard(text: str | None) -> tuple[int, int]:
    """`--shard i/N` (i counted from 0, as SLURM_ARRAY_TASK_ID is) -> (i, N); None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ParameterError("shard", f"takes i/N with 0 <= i < N (e.g. 0/4), got '{text}'") from None
    if count < 1 or not 0 <= index < count:
        raise ParameterError("shard", f"takes i/N with 0 <= i < N (e.g. 0/4), got '{text}'")
    return index, count


def shard_share(total: int, shard: tuple[int, int]) -> int:
    """How many of `total` items shard (i, N) takes when they are dealt round-robin."""
    index, count = shard
    return total // count + int(index < total % count)


@contextmanager
def sigterm_as_interrupt():
    """Within the block (main thread only), SIGTERM, as Slurm's time limit and `scancel` send it, ends the run
    as Ctrl-C does: finished episodes are kept and workers stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def deterministic_cpu():
    """CPU kernels whose results do not depend on how many workers run: oneDNN off and one torch thread
    within the block (see the module docstring); both are restored after."""
    import torch

    mkldnn, threads = torch.backends.mkldnn.enabled, torch.get_num_threads()
    torch.backends.mkldnn.enabled = False
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = mkldnn
        torch.set_num_threads(threads)


def resolve(name: str):
    """The callable named "module:attribute"."""
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def _die_with_parent() -> None:
    """Linux: have the kernel end this process when its parent dies, however the parent ends."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker notices its parent is gone between jobs
        pass


def _worker_main(setup: str, args: tuple, threads: int, tasks, results, parent: int, slot: int, current) -> None:
    """One worker: `results` is this worker's own pipe to the parent (sent synchronously, with no lock shared
    with the other workers, so a worker that dies mid-send cannot block the others)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _die_with_parent()
    for name in ("LP_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # Mesa llvmpipe, OpenMP, MKL
        os.environ[name] = str(threads)  # this worker's share, read when each library starts
    try:
        state = resolve(setup)(*args)
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which fails the command
        results.send(("setup-error", None, f"{type(err).__name__}: {err}", traceback.format_exc()))
        return
    if "torch" in sys.modules:  # only where the worker uses torch (evaluation, not collection)
        sys.modules["torch"].set_num_threads(threads)
    try:
        while os.getppid() == parent:  # a parent that died reads no results: stop
            try:
                job = tasks.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if job is None:
                return
            number, key, payload = job
            current[slot] = number  # shared memory, so the parent knows the job even if this process dies now
            try:
                results.send(("done", number, state.run(payload), None))
            except BaseException as err:  # noqa: BLE001 - reported to the parent with the job's key
                results.send(("error", number, f"{type(err).__name__}: {err}", traceback.format_exc()))
    finally:
        close = getattr(state, "close", None)
        if close is not None:
            close()


class WorkerPool:
    """`workers` spawned processes sharing one job queue (see the module docstring)."""

    def __init__(self, workers: int, setup: str, args: tuple = (), threads: int | None = None):
        if workers < 1:
            raise ParameterError("workers", f"must be at least 1, got {workers}")
        os.environ.setdefault("MUJOCO_GL", "egl")  # inherited by the spawned workers
        ctx = mp.get_context("spawn")
        self.threads = threads or max(1, available_cores() // workers)
        self.tasks = ctx.Queue()
        pipes = [ctx.Pipe(duplex=False) for _ in range(workers)]  # (read end, write end) per worker
        self.inbox = [read for read, _ in pipes]
        self.messages: list[tuple] = []
        self.current = ctx.Array("q", [-1] * workers, lock=False)  # per worker: the number of the job it runs
        self.keys: dict[int, Any] = {}  # job number -> key, for the jobs not yet reported
        self.processes = [
            ctx.Process(
                target=_worker_main,
                args=(setup, args, self.threads, self.tasks, pipes[i][1], os.getpid(), i, self.current),
                daemon=True,
                name=f"harmowam-worker-{i}",
            )
            for i in range(workers)
        ]
        # Started with Ctrl-C ignored (an ignored signal stays ignored across exec, and Python then leaves it so),
        # so that a Ctrl-C during a worker's start-up reaches the parent alone.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            for process in self.processes:
                process.start()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        for _, write in pipes:
            write.close()  # the workers hold them: a worker's death closes its pipe
        self.submitted = 0
        self.dead: set[int] = set()  # slots of workers whose death was reported

    @property
    def outstanding(self) -> int:
        """Jobs submitted and not yet reported."""
        return len(self.keys)

    def submit(self, key: Any, payload: Any) -> None:
        self.keys[self.submitted] = key
        self.tasks.put((self.submitted, key, payload))
        self.submitted += 1

    def next_result(self) -> tuple[Any, Any]:
        """The (key, result) of the next job to finish; WorkerError when a job fails or its worker dies."""
        if self.outstanding == 0:
            raise RuntimeError("no job is outstanding")
        while True:
            if not self.messages:
                self._receive(POLL_SECONDS)
            if not self.messages:
                self._check_alive()
                continue
            kind, number, value, trace = self.messages.pop(0)
            if kind == "setup-error":
                raise WorkerError(None, f"a worker could not start: {value}", trace)
            if number not in self.keys:  # a job already accounted for
                continue
            key = self.keys.pop(number)
            if kind == "done":
                return key, value
            raise WorkerError(key, value, trace)

    def _receive(self, timeout: float) -> None:
        """Read every message that arrives within `timeout` seconds from the workers' pipes."""
        for conn in mp.connection.wait([c for c in self.inbox if not c.closed], timeout=timeout):
            try:
                while conn.poll():
                    self.messages.append(conn.recv())
            except (EOFError, OSError):  # its worker ended (or died): `_check_alive` tells which
                conn.close()

    def drain(self) -> list[tuple[Any, Any]]:
        """The (key, result) of jobs already finished and not yet read, without waiting (after Ctrl-C)."""
        self._receive(0)
        out = []
        for kind, number, value, _ in self.messages:
            if kind == "done" and number in self.keys:
                out.append((self.keys.pop(number), value))
        self.messages = []
        return out

    def run(self, jobs: Iterable[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
        """Submit every job, then yield (key, result) in completion order."""
        for key, payload in jobs:
            self.submit(key, payload)
        while self.outstanding:
            yield self.next_result()

    def _check_alive(self) -> None:
        """Report each worker that died (once): the job it was running is lost."""
        for slot, process in enumerate(self.processes):
            if process.exitcode in (None, 0) or slot in self.dead:
                continue
            self.dead.add(slot)
            number = self.current[slot]
            if number in self.keys:
                key = self.keys.pop(number)
                raise WorkerError(key, f"its worker process died (exit code {process.exitcode})")
            hint = " (out of memory? try fewer --workers)" if process.exitcode == -signal.SIGKILL else ""
            where = "while starting" if number < 0 else "between jobs"
            raise WorkerError(None, f"a worker process died {where} (exit code {process.exitcode}){hint}")

    def close(self) -> None:
        """Stop every worker: politely when every job has been reported, at once otherwise (Ctrl-C, an error,
        jobs no longer needed)."""
        if self.outstanding == 0:
            for _ in self.processes:
                self.tasks.put(None)
            for process in self.processes:
                process.join(timeout=10.0)
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=5.0)
        self.tasks.cancel_join_thread()  # jobs no worker took must not block our exit
        self.tasks.close()
        for conn in self.inbox:
            conn.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
