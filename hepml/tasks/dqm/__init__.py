"""``task: dqm``: flag bad lumisections with an autoencoder trained on good ones.

Flow (see ``docs/dqm.md``):

1. :class:`hepml.io.Source` reads the ``lumis`` tree in chunks of ``data.step_size``
   lumisections (LS). The small per-LS branches (run, lumi, crossings, fault code) are
   read first for all LS; the histograms chunk by chunk. Every LS is assigned to
   train/validation/test by the workflow seed.
2. :class:`~hepml.representations.lumisections.LumisectionMaps` stacks the occupancy
   histograms of each LS into one map ``[1, H, W]`` (a rate per crossing by default), bound
   to the binning of the input (recorded in the checkpoint).
3. The autoencoder is trained on good LS of the training split only (``fault == 0`` when
   ``dqm.truth`` names the fault branch) and validated on good LS of the validation split.
   Its input normalisation is ``(x - shift) / scale`` with shift = per-bin mean and scale
   = per-bin standard deviation of the training maps, floored at ``dqm.scale_floor``
   counts per LS so that rarely filled bins do not blow up the score.
4. Every LS is scored with ``model.anomaly_scores`` (chunk by chunk, no gradients). The
   signed residual ``r = (x - reconstruction) / scale`` of each channel, divided by its
   root-mean-square over the good training LS, is the channel's *pull*; the score
   (``dqm.score``, :data:`SCORE_DEFINITIONS`) is built from the pulls, by default the
   largest standardised mean squared pull over channel groups of every size, and the
   pull map localises the fault.
5. The threshold is the ``1 - dqm.false_alarm_rate`` quantile of the scores of the good
   validation LS; an LS is *flagged* when its score is above it. The false-alarm rate is
   measured on the good LS of the test split, the detection efficiency per fault type on
   all faulty LS (never trained on), with binomial uncertainties; localisation compares
   the channels of largest ``|pull|`` with the truth mask of the fault.
6. Outputs (rank 0): friend trees (``anomaly_score``, ``flagged``, ``split``,
   ``excluded``), ``flagged_lumisections.csv``, ``metrics.json``, plots and
   ``report.html``.

:func:`score_files` applies a trained checkpoint to further runs (``hepml dqm``).

The package: :mod:`~hepml.tasks.dqm.data` (the ``dqm:`` section, the lumisections read
chunk by chunk), :mod:`~hepml.tasks.dqm.scores` (calibrating and scoring every LS),
:mod:`~hepml.tasks.dqm.outputs` (friend trees, CSV, plots), :mod:`~hepml.tasks.dqm.task`
(:func:`run`) and :mod:`~hepml.tasks.dqm.apply` (:func:`score_files`); the statistics
(pulls, multiscale statistics, threshold, detection and false-alarm metrics) are in
:mod:`hepml.evaluation.dqm`.
"""

from __future__ import annotations

from hepml.evaluation.dqm import (
    ScoreCalibration,
    ScoredRun,
    dqm_metrics,
    multiscale_statistics,
)
from hepml.tasks.dqm.apply import CALIBRATION_KEY, score_files
from hepml.tasks.dqm.data import (
    MODEL_KINDS,
    SCORE_DEFINITIONS,
    DQMConfig,
    LumisectionChunk,
    LumisectionData,
    build_representation,
)
from hepml.tasks.dqm.data import _model_kind as _model_kind
from hepml.tasks.dqm.outputs import FRIEND_TREE
from hepml.tasks.dqm.scores import calibrate, score_lumisections
from hepml.tasks.dqm.task import run, summarise

__all__ = ["DQMConfig", "LumisectionData", "ScoreCalibration", "ScoredRun",
           "build_representation", "calibrate", "multiscale_statistics", "run", "score_files",
           "score_lumisections", "dqm_metrics", "MODEL_KINDS", "SCORE_DEFINITIONS",
           "CALIBRATION_KEY", "FRIEND_TREE", "LumisectionChunk", "summarise"]
