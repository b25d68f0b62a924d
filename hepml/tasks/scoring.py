"""Scoring many files on dask: the orchestration shared by ``hepml predict`` and ``hepml scan``.

A *job* (:class:`ScoringJob`) says what to read and how to score and write one file;
:func:`score_files` does the rest, the same way for every job:

1. Expand the globs (a name or glob that matches nothing is a skipped input); check every
   file on the cluster (:func:`hepml.io.dask_io.check_file`: the file opens, the tree and
   every branch exist, it has entries). A file that fails is skipped with its one-line
   error, not fatal.
2. Read the good files with ``uproot.dask`` in chunks of ``job.step_size`` entries
   (:func:`hepml.io.dask_io.dask_chunks`); map every chunk through the same field
   evaluation and checks as :meth:`hepml.io.Source.read` and then through
   ``job.score_chunk`` (representation -> model -> scores, the model loaded once per
   worker, see :func:`cached`); then one task per file gives that file's chunk results,
   in entry order, to ``job.write_file`` (the friend tree). A file whose chunk cannot be
   read (a corrupt basket), holds NaN, or fails in the model is skipped, not fatal.
3. Run the graph on a ``dask.distributed`` cluster (a :class:`~distributed.LocalCluster`
   started here, or a running scheduler given by its address) with one future per file,
   a progress bar over the files done, or in this process with dask's synchronous
   scheduler.
4. List the skipped files in ``OUT/skipped_files.json``; raise when no file was scored.

Memory: the client holds one small summary per file, never the inputs or the scores; a
worker holds the chunk it scores (the scheduler queues the reading tasks, so at most one
more chunk is read ahead), and the chunk scores of a file until that file is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import awkward as ak

from hepml.config import DataConfig, from_mapping
from hepml.errors import ConfigError, EmptyInputError, HepmlError, InputFileError
from hepml.io import (
    FileCheck,
    check_file,
    dask_chunks,
    evaluate_fields,
    expand_files,
    resolve_fields,
)
from hepml.io.atomic import check_writable, write_json
from hepml.io.dask_io import chunk_read_error
from hepml.training.device import uses_gpu

log = logging.getLogger(__name__)

__all__ = ["SYNCHRONOUS", "Failure", "ScoringJob", "ScoringReport", "cached", "file_key",
           "score_files"]

#: ``scheduler=`` value that runs the task graph in this process, one task at a time.
SYNCHRONOUS = "synchronous"


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why a file could not be scored: one line naming the file and the cause."""

    message: str


class ScoringJob(Protocol):
    """What :func:`score_files` needs to know about a job; instances must pickle.

    Attributes:
        tree: Tree to read.
        fields: Fields every file must provide (after the branch mapping).
        optional_fields: Fields read only if every good file has them (e.g. labels).
        branches: Field -> branch or expression mapping.
        step_size: Entries per chunk (one task reads one chunk).
    """

    tree: str
    fields: tuple[str, ...]
    optional_fields: tuple[str, ...]
    branches: dict[str, str] | None
    step_size: int

    def score_chunk(self, arrays: ak.Array, *, path: str, start: int, stop: int) -> Any:
        """Score the entries ``start``-``stop`` of ``path`` (fields already read and checked)."""

    def write_file(self, path: str, entries: int, chunks: list[Any]) -> dict[str, Any]:
        """Write the outputs of ``path`` from its chunk results in entry order; a summary."""


@dataclasses.dataclass
class ScoringReport:
    """The outcome of :func:`score_files`.

    Attributes:
        files: Every input file, in input order.
        results: One summary per scored file, in input order: ``path``, ``entries`` and
            what the job's ``write_file`` returned.
        skipped: ``{"path", "error"}`` per file that could not be scored, in input order.
        scheduler: Where it ran (``synchronous``, a LocalCluster, an address).
        used_optional: Whether the optional fields were read.
    """

    files: list[str]
    results: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    scheduler: str
    used_optional: bool = False

    @property
    def entries(self) -> int:
        """Entries scored, over all scored files."""
        return sum(int(r["entries"]) for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        """The summary fields shared by the commands' summary JSON files."""
        return {"files_scored": len(self.results), "files_skipped": len(self.skipped),
                "n_entries": self.entries, "scheduler": self.scheduler,
                "skipped": self.skipped}


# ------------------------------------------------------------------------ worker cache

_CACHE: OrderedDict[Any, Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4


def cached(key: Any, make: Callable[[], Any]) -> Any:
    """``make()`` once per process and ``key``: the model of a checkpoint is loaded once per worker.

    The few most recently used values are kept. Put what identifies the value in ``key``
    (a checkpoint's path and modification time, the device).
    """
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        value = make()
        _CACHE[key] = value
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return value


def data_config(recorded: dict[str, Any], files: str | Path | Sequence[str | Path], *,
                tree: str | None = None, branches: dict[str, str] | None = None,
                step_size: int | None = None, where: str = "predict",
                **changes: Any) -> DataConfig:
    """The data section a checkpoint was trained with, pointed at other files.

    Every entry of ``files`` is scored (no ``max_entries``, all in the test split).

    Args:
        recorded: The checkpoint's ``config["data"]``.
        files: Files or globs to score.
        tree: Tree name (default: the recorded one).
        branches: Branch mapping (default: the recorded one).
        step_size: Entries per chunk (default: the recorded one).
        where: Name of the command, for messages.
        **changes: Further keys to set (e.g. ``labels=[]``).
    """
    cfg = dict(recorded)
    cfg.update(files=[files] if isinstance(files, (str, Path)) else [str(f) for f in files],
               max_entries=None, split=[0.0, 0.0, 1.0], **changes)
    if tree:
        cfg["tree"] = tree
    if branches is not None:
        cfg["branches"] = branches
    if step_size:
        cfg["step_size"] = step_size
    return from_mapping(DataConfig, cfg, where=where)


def file_key(path: str | Path) -> tuple[str, int, int]:
    """``(path, size, modification time)``: a cache key that changes when the file does."""
    st = os.stat(path)
    return str(Path(path).resolve()), st.st_size, st.st_mtime_ns


# ------------------------------------------------------------------------------ tasks


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, HepmlError) else f"{type(exc).__name__}: {text}"


def _failure(exc: BaseException, path: str) -> Failure:
    text = _one_line(exc)
    return Failure(text if path in text else f"{path}: {text}")


def _check_task(path: str, tree: str, fields: tuple[str, ...], branches: dict[str, str] | None,
                optional: tuple[str, ...]) -> FileCheck | Failure:
    try:
        return check_file(path, tree, fields, branches=branches, optional_fields=optional)
    except Exception as exc:
        return _failure(exc, path)


def _chunk_task(raw: ak.Array, job: ScoringJob, fields: tuple[str, ...], path: str, start: int,
                stop: int) -> Any:
    try:
        if len(raw) != stop - start:  # uproot.dask could not read the chunk
            return Failure(chunk_read_error(path, job.tree, raw.fields, start, stop))
        arrays = evaluate_fields(raw, resolve_fields(fields, job.branches), path=path,
                                 tree=job.tree, start=start, stop=stop)
        return job.score_chunk(arrays, path=path, start=start, stop=stop)
    except Exception as exc:
        return _failure(exc, path)


def _file_task(job: ScoringJob, path: str, entries: int, *chunks: Any) -> dict[str, Any] | Failure:
    for chunk in chunks:
        if isinstance(chunk, Failure):
            return chunk
    try:
        return {"path": path, "entries": entries, **job.write_file(path, entries, list(chunks))}
    except Exception as exc:
        return _failure(exc, path)


# -------------------------------------------------------------------------- executors


class _Runner:
    """Runs one dask task per file and yields ``(index, value)`` as the files are done."""

    def __init__(self, client: Any, description: str) -> None:
        self.client = client
        self.description = description

    def prepare(self, module: str) -> None:
        """Import ``module`` (the job's, with torch and the models) on every worker now.

        Otherwise the first task of each worker imports it while the worker keeps reading
        chunks that then wait in memory.
        """
        if self.client is not None:
            self.client.run(importlib.import_module, module)

    def run(self, tasks: Sequence[Any], paths: Sequence[str], *, desc: str,
            progress: bool | None) -> Iterator[tuple[int, Any]]:
        """Compute ``tasks`` (Delayed, one per file in ``paths``); exceptions become Failures."""
        from tqdm.auto import tqdm

        # without an explicit ``disable``, tqdm follows TQDM_DISABLE (set by ``hepml -q``)
        switch = {} if progress is None else {"disable": not progress}
        with tqdm(total=len(tasks), desc=desc, unit="file", leave=False, **switch) as bar:
            if self.client is None:
                import dask

                for i, task in enumerate(tasks):
                    try:
                        (value,) = dask.compute(task, scheduler=SYNCHRONOUS)
                    except Exception as exc:
                        value = _task_failure(exc, paths[i])
                    bar.update()
                    yield i, value
                bar.refresh()  # see below
                return
            from distributed import as_completed

            futures = self.client.compute(list(tasks))
            index = {f.key: i for i, f in enumerate(futures)}
            try:
                for future in as_completed(futures):
                    i = index[future.key]
                    if future.status == "error":
                        value = _task_failure(future.exception(), paths[i])
                    else:
                        value = future.result()
                    future.release()
                    bar.update()
                    yield i, value
                # update() redraws at most every 0.1 s, so files done together (the checks,
                # a cluster's last files) left the bar drawn short of its total until closed
                bar.refresh()
            finally:
                for future in futures:
                    future.release()


def _task_failure(exc: BaseException, path: str) -> Failure:
    """A failure raised outside the tasks' own error handling (a lost worker, a crash)."""
    if type(exc).__name__ in ("KilledWorker", "CancelledError", "FutureCancelledError"):
        return Failure(f"{path}: the dask worker scoring it was lost (out of memory? see the "
                       f"workers' logs): {_one_line(exc)}")
    return _failure(exc, path)


@contextlib.contextmanager
def _quiet_distributed() -> Iterator[None]:
    """Keep distributed's start-up and shut-down messages out of the output (warnings stay).

    ``distributed`` sets its loggers' levels when it is imported, so this imports it first.
    """
    import distributed  # noqa: F401

    names = ["distributed", *(n for n in logging.root.manager.loggerDict
                              if n.startswith("distributed."))]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def local_workers(workers: int | None, device: str) -> int:
    """Worker processes of a LocalCluster: ``workers``, else one per CPU, or one on a GPU.

    Each worker process loads its own copy of the model and, on a GPU, its own CUDA
    context on the same card: one worker feeds the GPU, more only compete for its memory.
    """
    if workers is not None:
        return workers
    if uses_gpu(device):
        log.info("scoring on %s: one worker process (set --workers to change)", device)
        return 1
    return os.cpu_count() or 1


@contextlib.contextmanager
def _runner(scheduler: str | None, workers: int | None, processes: bool) -> Iterator[_Runner]:
    """This process (``synchronous``), a new LocalCluster (``None``), or a running scheduler."""
    if scheduler == SYNCHRONOUS:
        yield _Runner(None, SYNCHRONOUS)
        return
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    with _quiet_distributed():
        from distributed import Client, LocalCluster

        if scheduler in (None, "", "local"):
            n = workers or os.cpu_count() or 1
            try:
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes,
                                       dashboard_address=":0", silence_logs=logging.WARNING)
            except (RuntimeError, OSError, TimeoutError) as exc:
                raise ConfigError(f"cannot start a local dask cluster ({_one_line(exc)}). "
                                  "Use --scheduler synchronous, or the address of a running "
                                  "scheduler.") from None
            description = (f"LocalCluster ({n} {'process' if processes else 'thread'} "
                           f"worker{'s' if n > 1 else ''}, 1 thread each)")
            try:
                with Client(cluster) as client:
                    yield _Runner(client, description)
            finally:
                # a worker that takes long to exit is killed, with a warning that says nothing
                logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
                cluster.close()
            return
        if workers is not None:
            log.warning("--workers is ignored with a running scheduler (%s)", scheduler)
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"cannot connect to the dask scheduler at {scheduler!r} "
                              f"({_one_line(exc)}). Start one (dask scheduler) or leave "
                              "--scheduler out to use a local cluster.") from None
        with client:
            yield _Runner(client, str(scheduler))


# ------------------------------------------------------------------------ the driver


def score_files(job: ScoringJob, files: str | Sequence[str], out_dir: str | Path, *,
                scheduler: str | None = SYNCHRONOUS, workers: int | None = None,
                processes: bool = True, progress: bool | None = None) -> ScoringReport:
    """Check, read, score and write every file of ``files`` with ``job``; skip bad files.

    Args:
        job: What to read and how to score and write one file (see :class:`ScoringJob`).
        files: ROOT files or globs.
        out_dir: Output directory; ``skipped_files.json`` is written there.
        scheduler: ``synchronous`` (this process), ``None`` (a new LocalCluster) or the
            address of a running ``dask.distributed`` scheduler.
        workers: Workers of the LocalCluster (default: the number of CPUs; one when the
            job's ``device`` is a GPU).
        processes: LocalCluster workers are processes (else threads of this process).
        progress: Show progress bars (default: unless ``TQDM_DISABLE`` is set).

    Returns:
        The per-file summaries and the skipped files.

    A file name or glob that matches no file is listed among the skipped files.

    Raises:
        ConfigError: Two inputs have the same file name (outputs are named after it).
        EmptyInputError: No file could be scored (the reasons are in the message and in
            ``skipped_files.json``).
        OutputError: ``out_dir`` cannot be written to (checked before any file is scored).
    """
    paths: list[str] = []
    unmatched: list[dict[str, str]] = []  # patterns or names that match no file
    for pattern in [files] if isinstance(files, (str, os.PathLike)) else files:
        try:
            paths += [p for p in expand_files(pattern) if p not in paths]
        except InputFileError as exc:
            unmatched.append({"path": str(pattern), "error": str(exc).split(". Check")[0]})
    stems: dict[str, str] = {}
    for path in paths:
        other = stems.setdefault(Path(path).stem, path)
        if other != path:
            raise ConfigError(f"{other} and {path} have the same name; their outputs (named "
                              "after the input file) would overwrite each other. Score them "
                              "into different --out directories.")
    out_dir = check_writable(out_dir)  # before any file is scored
    failures: dict[int, str] = {}
    results: dict[int, dict[str, Any]] = {}
    used_optional, description = False, "nothing (no input file)"
    if paths:
        if scheduler in (None, "", "local"):
            workers = local_workers(workers, str(getattr(job, "device", "cpu")))
        with _runner(scheduler, workers, processes) as runner:
            log.info("scoring %d file(s) on %s", len(paths), runner.description)
            used_optional = _score_on(runner, job, paths, failures, results, progress=progress)
            description = runner.description
    skipped = unmatched + [{"path": paths[i], "error": failures[i]} for i in sorted(failures)]
    if skipped:
        log.warning("%d of %d file(s) could not be scored and were skipped; they are listed "
                    "with their errors in %s", len(skipped), len(paths) + len(unmatched),
                    out_dir / "skipped_files.json")
    write_json(out_dir / "skipped_files.json", skipped, indent=1)
    report = ScoringReport(files=paths, results=[results[i] for i in sorted(results)],
                           skipped=skipped, scheduler=description, used_optional=used_optional)
    if not report.results:
        shown = "; ".join(s["error"] for s in skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        raise EmptyInputError(f"none of the {len(paths) + len(unmatched)} input file(s) could "
                              f"be scored: {shown} "
                              f"(all listed in {out_dir / 'skipped_files.json'})")
    return report


def _score_on(runner: _Runner, job: ScoringJob, paths: list[str], failures: dict[int, str],
              results: dict[int, dict[str, Any]], *, progress: bool | None) -> bool:
    """Check, then score, every file of ``paths``; fill ``failures`` and ``results`` by index.

    Returns:
        Whether the optional fields were read.
    """
    import dask

    tag = uuid.uuid4().hex[:12]
    checks: dict[int, FileCheck] = {}
    check_tasks = [dask.delayed(_check_task, pure=False)(
        p, job.tree, tuple(job.fields), job.branches, tuple(job.optional_fields),
        dask_key_name=f"hepml-check-{tag}-{i}") for i, p in enumerate(paths)]
    for i, value in runner.run(check_tasks, paths, desc="checking", progress=progress):
        if isinstance(value, Failure):
            log.info("skipping %s", value.message)
            failures[i] = value.message
        else:
            checks[i] = value
    good = sorted(checks)
    if not good:
        return False
    used_optional = bool(job.optional_fields) and all(checks[i].has_optional for i in good)
    if job.optional_fields and not used_optional:
        log.info("not every file has %s; those fields are not read",
                 ", ".join(job.optional_fields))
    fields = tuple(job.fields) + (tuple(job.optional_fields) if used_optional else ())
    chunks = dask_chunks([checks[i] for i in good], step_size=job.step_size,
                         optional=used_optional)
    runner.prepare(type(job).__module__)
    file_tasks = []
    for i in good:
        c = checks[i]
        scored = [dask.delayed(_chunk_task, pure=False)(
            ref.partition, job, fields, c.path, ref.start, ref.stop,
            dask_key_name=f"hepml-chunk-{tag}-{i}-{k}") for k, ref in enumerate(chunks[c.path])]
        file_tasks.append(dask.delayed(_file_task, pure=False)(
            job, c.path, c.entries, *scored, dask_key_name=f"hepml-file-{tag}-{i}"))
    for k, value in runner.run(file_tasks, [checks[i].path for i in good], desc="scoring",
                               progress=progress):
        if isinstance(value, Failure):
            log.info("skipping %s", value.message)
            failures[good[k]] = value.message
        else:
            results[good[k]] = value
    return used_optional
