"""Pieces shared by the Pythia 8 generators (:mod:`~hepml.simulation.jets`, ``events``).

Seeds and work shares of the worker processes, Pythia set-up with every setting checked,
the per-id particle table, the flat view of an event record, the worker pool with its
progress bar, run metadata and the mixing of several classes into one shuffled set.

A generator's configuration derives from :class:`GeneratorConfig` and has the fields
``process sqrt_s mpi isr fsr tune extra_settings seed n_workers batch_size``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import os
import queue as queue_module
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from hepml._fastjet import fastjet as _import_fastjet
from hepml.errors import ConfigError, GenerationError
from hepml.io.provenance import versions

log = logging.getLogger(__name__)

#: Largest allowed master seed: worker seeds are ``seed * 1000 + worker + 1`` and Pythia
#: accepts seeds up to 900 000 000.
MAX_SEED = 899_998
MAX_WORKERS = 999

_PYTHIA_SEED_MAX = 900_000_000
#: The packages whose versions generated files record (they shape the generated data).
GENERATOR_PACKAGES = ("pythia8mc", "fastjet", "hepml", "awkward", "numpy", "uproot")


def worker_seeds(seed: int, n_workers: int) -> list[int]:
    """Return the Pythia seed of each worker: ``seed * 1000 + worker + 1`` (never 0)."""
    seeds = [seed * 1000 + i + 1 for i in range(n_workers)]
    if seeds and seeds[-1] > _PYTHIA_SEED_MAX:
        raise ConfigError(f"seed {seed} is too large; use 0 <= seed <= {MAX_SEED}")
    return seeds


def shares(n: int, n_workers: int) -> list[int]:
    """Split ``n`` items into ``n_workers`` fixed shares, larger shares first."""
    return [n // n_workers + (1 if i < n % n_workers else 0) for i in range(n_workers)]


def check_count(name: str, n: Any) -> int:
    """Return ``n`` as an int if it is a positive integer, else raise ConfigError."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"{name} = {n!r} must be a positive integer")
    return int(n)


# --------------------------------------------------------------------------- configuration


class GeneratorConfig:
    """Checks and Pythia settings common to the generator configurations (frozen dataclasses)."""

    process: str
    sqrt_s: float
    mpi: bool
    isr: bool
    fsr: bool
    tune: int
    extra_settings: tuple[str, ...]
    seed: int
    n_workers: int
    batch_size: int

    def _check_process(self, known: Sequence[str]) -> None:
        if self.process not in known:
            raise ConfigError(
                f"{type(self).__name__}.process = {self.process!r} is not known; "
                f"use one of {', '.join(known)}"
            )

    def _normalise_settings(self) -> None:
        name = type(self).__name__
        if isinstance(self.extra_settings, str):
            object.__setattr__(self, "extra_settings", (self.extra_settings,))
        object.__setattr__(self, "extra_settings", tuple(self.extra_settings))
        for s in self.extra_settings:
            if not isinstance(s, str) or "=" not in s:
                raise ConfigError(
                    f"{name}.extra_settings: {s!r} is not a Pythia setting; "
                    "write it as 'Name:key = value'"
                )

    def _check_run(self) -> None:
        """Check the fields shared by every generator (tune, seed, workers, switches)."""
        self._check_positive("sqrt_s", self.sqrt_s)
        self._check_int("tune", self.tune, 1, None)
        self._check_int("seed", self.seed, 0, MAX_SEED)
        self._check_int("n_workers", self.n_workers, 1, MAX_WORKERS)
        self._check_int("batch_size", self.batch_size, 1, None)
        for name in ("mpi", "isr", "fsr"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"{type(self).__name__}.{name} = {getattr(self, name)!r} must be true "
                    "or false"
                )

    def _check_number(self, name: str, value: Any, *, minimum: float) -> None:
        owner = type(self).__name__
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            raise ConfigError(f"{owner}.{name} = {value!r} must be a finite number")
        if value < minimum:
            raise ConfigError(f"{owner}.{name} = {value!r} must be >= {minimum}")

    def _check_positive(self, name: str, value: Any) -> None:
        self._check_number(name, value, minimum=-math.inf)
        if value <= 0:
            raise ConfigError(f"{type(self).__name__}.{name} = {value!r} must be positive")

    def _check_int(
        self, name: str, value: Any, lo: int, hi: int | None, *, allow_none: bool = False
    ) -> None:
        if value is None and allow_none:
            return
        owner = type(self).__name__
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"{owner}.{name} = {value!r} must be an integer")
        if value < lo or (hi is not None and value > hi):
            upper = f" and <= {hi}" if hi is not None else ""
            raise ConfigError(f"{owner}.{name} = {value!r} must be >= {lo}{upper}")

    def _settings(self, process_settings: Sequence[str], worker_seed: int) -> list[str]:
        """Tune and beam first, the process, shower switches and seed, extra settings last."""
        on = {True: "on", False: "off"}
        return [
            f"Tune:pp = {self.tune}",  # first: a tune resets the parameters it covers
            f"Beams:eCM = {self.sqrt_s:g}",
            *process_settings,
            f"PartonLevel:MPI = {on[self.mpi]}",
            f"PartonLevel:ISR = {on[self.isr]}",
            f"PartonLevel:FSR = {on[self.fsr]}",
            "Random:setSeed = on",
            f"Random:seed = {worker_seed}",
            "Print:quiet = on",
            "Next:numberCount = 0",
            *self.extra_settings,
        ]

    def pythia_settings(self, worker_seed: int) -> list[str]:  # pragma: no cover - abstract
        """Return every Pythia setting string used by a worker with Pythia seed ``worker_seed``."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain JSON-serialisable values."""
        d = dataclasses.asdict(self)  # type: ignore[call-overload]
        d["extra_settings"] = list(self.extra_settings)
        return d


# --------------------------------------------------------------------------- Pythia


def make_pythia(config: GeneratorConfig, worker_seed: int) -> tuple[Any, list[str]]:
    """Create and initialise a Pythia instance; every setting is checked."""
    import pythia8mc

    settings = config.pythia_settings(worker_seed)
    pythia = pythia8mc.Pythia("", False)
    for s in settings:
        if not pythia.readString(s):
            raise GenerationError(
                f"Pythia refused the setting {s!r}: check its name and value against the "
                "Pythia 8 manual (extra settings come from --set / extra_settings)"
            )
    if not pythia.init():
        raise GenerationError(
            f"Pythia initialisation failed for process {config.process!r} (seed {worker_seed}); "
            "check the settings (Pythia's log above names the problem)"
        )
    return pythia, settings


class ParticleTable:
    """Per-id charge and visibility, looked up once per new id and then vectorised."""

    def __init__(self, particle_data: Any) -> None:
        self._pd = particle_data
        self._ids = np.zeros(0, dtype=np.int64)
        self._charge = np.zeros(0, dtype=np.float32)
        self._visible = np.zeros(0, dtype=bool)

    def _extend(self, ids: np.ndarray) -> None:
        new = np.setdiff1d(np.unique(ids), self._ids)
        if not len(new):
            return
        charge = np.array([self._pd.charge(int(i)) for i in new], dtype=np.float32)
        visible = np.array([self._pd.isVisible(int(i)) for i in new], dtype=bool)
        ids_all = np.concatenate([self._ids, new])
        order = np.argsort(ids_all)
        self._ids = ids_all[order]
        self._charge = np.concatenate([self._charge, charge])[order]
        self._visible = np.concatenate([self._visible, visible])[order]

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (charge, visible) for an array of PDG ids."""
        self._extend(ids)
        pos = np.searchsorted(self._ids, ids)
        return self._charge[pos], self._visible[pos]


@dataclass
class Record:
    """A batch of Pythia event records as flat numpy arrays (all events one after another).

    Attributes:
        n_events: Events in the batch.
        counts: Entries of each event's record.
        offsets: Index in the flat arrays of each event's first entry.
        event_of: Event of each flat entry.
        pid, status, mother1, px, py, pz, e: Per entry (PDG id as int64, Pythia status
            and first mother as int, momenta in GeV as float64).
        final: Visible final-state particles with finite momenta (status > 0, not
            invisible in Pythia's particle data, e.g. no neutrinos).
        charge: Electric charge of each entry.
    """

    n_events: int
    counts: np.ndarray
    offsets: np.ndarray
    event_of: np.ndarray
    pid: np.ndarray
    status: np.ndarray
    mother1: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    final: np.ndarray
    charge: np.ndarray


def flat_record(prt: ak.Array, table: ParticleTable) -> Record:
    """Flatten ``nextBatch(...)["prt"]``; warn about final-state particles with NaN momenta."""
    counts = ak.to_numpy(ak.num(prt.id))
    flat = ak.flatten(prt)
    pid = ak.to_numpy(flat.id).astype(np.int64)
    status = ak.to_numpy(flat.status)
    p = flat.p
    px, py, pz, e = (ak.to_numpy(p.px), ak.to_numpy(p.py), ak.to_numpy(p.pz), ak.to_numpy(p.e))
    charge, visible = table.lookup(pid)
    finite = np.isfinite(px) & np.isfinite(py) & np.isfinite(pz) & np.isfinite(e)
    n_bad = int(np.count_nonzero((status > 0) & visible & ~finite))
    if n_bad:
        log.warning("dropped %d final-state particles with non-finite momentum", n_bad)
    n_events = len(counts)
    return Record(
        n_events=n_events,
        counts=counts,
        offsets=np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
        event_of=np.repeat(np.arange(n_events), counts),
        pid=pid, status=status, mother1=ak.to_numpy(flat.mother1), px=px, py=py, pz=pz, e=e,
        final=(status > 0) & visible & finite,
        charge=charge,
    )


# --------------------------------------------------------------------------- kinematics


def pt_eta_phi(px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> tuple[np.ndarray, ...]:
    """Transverse momentum, pseudorapidity and azimuth (along the beam: eta = +-23)."""
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / pt, np.sign(pz) * 1e10))
    return pt, eta, np.arctan2(py, px)


def antikt(
    px: np.ndarray, py: np.ndarray, pz: np.ndarray, e: np.ndarray, counts: np.ndarray,
    r: float,
) -> Any:
    """Anti-kt cluster sequence of radius ``r`` over many events in one FastJet call.

    ``px py pz e`` are flat particle arrays of all events, ``counts`` the particles per event.
    """
    fastjet = _import_fastjet()
    particles = ak.unflatten(
        ak.zip({"px": px, "py": py, "pz": pz, "E": e}, with_name="Momentum4D"), counts
    )
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, float(r))
    return fastjet.ClusterSequence(particles, jetdef)


# --------------------------------------------------------------------------- batches


def concat(pieces: Sequence[Mapping[str, Any]], n: int | None = None) -> dict[str, Any]:
    """Concatenate per-batch outputs (jagged ones as (flat, counts)); keep the first ``n``."""
    out: dict[str, Any] = {}
    for name in pieces[0]:
        vals = [p[name] for p in pieces]
        if isinstance(vals[0], tuple):
            flat = np.concatenate([v[0] for v in vals])
            counts = np.concatenate([v[1] for v in vals])
            if n is not None:
                flat, counts = flat[: int(counts[:n].sum())], counts[:n]
            out[name] = (flat, counts)
        else:
            arr = np.concatenate(vals)
            out[name] = arr[:n] if n is not None else arr
    return out


def to_jagged(branches: dict[str, Any]) -> dict[str, Any]:
    """Turn the (flat, counts) pairs of ``branches`` into awkward arrays, in place."""
    for name, value in list(branches.items()):
        if isinstance(value, tuple):
            branches[name] = ak.unflatten(value[0], value[1])
    return branches


def mix(arrays: Sequence[Mapping[str, Any]], seed: int) -> dict[str, Any]:
    """Concatenate several classes' branches and shuffle the entries with ``seed``."""
    names = list(arrays[0])
    merged = {k: ak.concatenate([a[k] for a in arrays]) if isinstance(arrays[0][k], ak.Array)
              else np.concatenate([a[k] for a in arrays]) for k in names}
    n = len(merged[names[0]])
    perm = np.random.default_rng(seed).permutation(n)
    merged = {k: v[perm] for k, v in merged.items()}
    for k, v in merged.items():
        if isinstance(v, ak.Array):  # make the permuted jagged arrays contiguous
            merged[k] = ak.to_packed(v)
    return merged


def write_mixture(
    make_arrays: Callable[..., tuple[dict[str, Any], dict[str, Any]]],
    configs: Sequence[GeneratorConfig],
    counts: Sequence[int],
    out_path: str | os.PathLike,
    *,
    unit: str,
    generator: str,
    shuffle_seed: int | None,
    progress: bool,
    tree: str,
) -> Path:
    """Make ``make_arrays(config, count)`` for each class, mix them and write one TTree.

    The metadata holds the processes, the counts under ``n_<unit>s``, the shuffle seed and
    each class's metadata under ``"classes"``.
    """
    from hepml.io.atomic import check_writable
    from hepml.io.writing import write_tree

    if len(configs) != len(counts) or not configs:
        raise ConfigError(
            f"{generator.rsplit('.', 1)[-1]} needs one {unit} count per configuration; got "
            f"{len(configs)} configurations and {len(counts)} counts"
        )
    check_writable(Path(out_path).parent)  # before generating
    arrays, metas = [], []
    for cfg, n in zip(configs, counts, strict=True):
        b, m = make_arrays(cfg, n, progress=progress)
        arrays.append(b)
        metas.append(m)
    seed = configs[0].seed if shuffle_seed is None else shuffle_seed
    meta = {
        "generator": generator,
        "processes": [c.process for c in configs],
        f"n_{unit}s": list(counts),
        "shuffle_seed": seed,
        "classes": metas,
    }
    return write_tree(out_path, mix(arrays, seed), tree=tree, metadata=meta)


# --------------------------------------------------------------------------- workers

_progress_queue: Any = None


def _init_worker(q: Any) -> None:
    global _progress_queue
    _progress_queue = q


class WorkerRun:
    """One worker's initialised Pythia instance, particle table, progress report and clock."""

    def __init__(
        self,
        config: GeneratorConfig,
        worker: int,
        report: Callable[[int, int], None] | None = None,
    ) -> None:
        if report is None and _progress_queue is not None:
            q = _progress_queue

            def report(w: int, n: int) -> None:
                q.put((w, n))

        self.worker = worker
        self._report = report
        self.seed = worker_seeds(config.seed, worker + 1)[worker]
        self.t0 = time.perf_counter()
        self.pythia, self.settings = make_pythia(config, self.seed)
        self.init_seconds = time.perf_counter() - self.t0
        self.table = ParticleTable(self.pythia.particleData)

    def report(self, n: int) -> None:
        """Advance the progress bar by ``n``."""
        if self._report is not None:
            self._report(self.worker, n)

    def summary(self, **counts: Any) -> dict[str, Any]:
        """Seeds, ``counts``, Pythia's statistics and cross-section, timings, settings."""
        elapsed = time.perf_counter() - self.t0
        info = self.pythia.infoPython()
        return {
            "worker": self.worker,
            "seed": self.seed,
            **counts,
            "n_tried": int(info.nTried()),
            "n_accepted": int(info.nAccepted()),
            "sigma_gen_mb": float(info.sigmaGen()),
            "sigma_err_mb": float(info.sigmaErr()),
            "init_seconds": self.init_seconds,
            "seconds": elapsed,
            "settings": self.settings,
        }


def run_workers(
    worker_fn: Callable[..., tuple[dict[str, Any], dict[str, Any]]],
    config: GeneratorConfig,
    n: int,
    *,
    unit: str,
    progress: bool,
) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], float]:
    """Run ``worker_fn(config, worker, share)`` for each worker's share of ``n`` items.

    One worker runs in this process; more run in ``spawn``-ed processes, so ``worker_fn``
    must be a module-level function. A tqdm bar counts the items.

    Returns:
        The workers' results in worker order and the wall time in seconds.
    """
    from tqdm.auto import tqdm

    parts = shares(n, config.n_workers)
    bar = tqdm(total=n, desc=f"{config.process} {unit}s", unit=unit, disable=not progress)
    t0 = time.perf_counter()
    try:
        if config.n_workers == 1:
            results = [worker_fn(config, 0, parts[0], lambda w, k: bar.update(k))]
        else:
            results = _run_pool(worker_fn, config, parts, bar, unit)
    finally:
        bar.close()
    return results, time.perf_counter() - t0


def _run_pool(
    worker_fn: Callable[..., Any], config: GeneratorConfig, parts: list[int], bar: Any, unit: str
) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    with ProcessPoolExecutor(
        max_workers=len(parts), mp_context=ctx, initializer=_init_worker, initargs=(q,)
    ) as pool:
        futures = [pool.submit(worker_fn, config, i, n) for i, n in enumerate(parts)]
        try:
            while not all(f.done() for f in futures):
                try:
                    _, n = q.get(timeout=0.2)
                    bar.update(n)
                except queue_module.Empty:
                    pass
                for f in futures:  # fail fast: a refused setting stops every worker
                    if f.done() and f.exception() is not None:
                        raise f.exception()
        except BrokenProcessPool as exc:
            raise GenerationError(
                f"a {unit}-generation worker process died: killed, out of memory, or it could "
                "not start because worker processes are spawned and re-import the main "
                "script; put the calling code under `if __name__ == '__main__':` (not on "
                "stdin) or use n_workers=1"
            ) from exc
        except BaseException:
            for f in futures:
                f.cancel()
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            raise
        results = [f.result() for f in futures]
    while True:  # drain the queue so the bar ends at the true count
        try:
            _, n = q.get_nowait()
            bar.update(n)
        except queue_module.Empty:
            break
    q.close()
    return results


def run_metadata(
    summaries: Sequence[Mapping[str, Any]], elapsed: float
) -> dict[str, Any]:
    """Metadata common to every generator: settings, seeds, per-worker records, versions."""
    sig = [s["sigma_gen_mb"] for s in summaries]
    return {
        "pythia_settings": summaries[0]["settings"],
        "worker_seeds": [s["seed"] for s in summaries],
        "workers": [{k: v for k, v in s.items() if k != "settings"} for s in summaries],
        "versions": versions(GENERATOR_PACKAGES, missing="unknown"),
        "sigma_gen_mb": float(np.mean(sig)),
        "wall_seconds": elapsed,
    }
