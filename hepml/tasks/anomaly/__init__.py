"""``task: anomaly``: train an autoencoder on background, scan a sample for anomalies.

A model-independent search: the autoencoder learns to reconstruct background entries
(QCD jets, or the bulk of collision data) and every entry is scored by how badly it is
reconstructed. Flow (see ``docs/anomaly.md``):

1. The entries (jets or events) are read in chunks through :class:`hepml.io.Source`
   with the workflow's branch mapping, and assigned to train/validation/test by the
   workflow seed. Labelled data (``data.labels``) name a background class; the
   autoencoder sees background entries of the training split only. Unlabelled data
   (``labels: []``, e.g. real collision data) are all treated as background.
2. The model's normalisation is fixed from the training entries (per-feature mean and
   standard deviation for feature vectors; one global scale for images, which keeps the
   relative weight of the pixels), then the shared :class:`~hepml.training.Trainer`
   trains it with the model's own loss.
3. Every entry is scored chunk by chunk (``reconstruction_error``, the VAE's ``kl``, or
   their sum); scores go to a friend tree per input file.
4. The *scanned sample* is the test split: with labels, its background plus signal
   entries injected at ``anomaly.signal_fraction`` (drawn with the seed from the test
   split's signal). Its most anomalous entries are written, ranked, to
   ``anomalies.csv`` and ``anomalies.root`` with their ids (``anomaly.ids``, e.g.
   ``Run``, ``Event``) and, for feature vectors, the features that drove each score.
5. With labels, the test split's background and signal give the ROC, AUC, signal
   efficiency at fixed background efficiencies (down to 1/N_B), the significance
   improvement curve, and the mass sculpting of the background by a cut on the score.

The package: :mod:`~hepml.tasks.anomaly.data` (the ``anomaly:`` section and the entries
read), :mod:`~hepml.tasks.anomaly.scores` (scoring chunk by chunk, the ranked records),
:mod:`~hepml.tasks.anomaly.outputs` (ranked list, friend trees),
:mod:`~hepml.tasks.anomaly.task` (:func:`run`) and :mod:`~hepml.tasks.anomaly.file_scan`
(:func:`scan`, ``hepml scan``). The figures of merit (ε_S at fixed ε_B, significance
improvement, mass sculpting, the injected sample and its cuts) are in
:mod:`hepml.evaluation.anomaly`; the entries are read with the tagger's adapter,
:mod:`hepml.tasks._entries`.
"""

from __future__ import annotations

from hepml.evaluation.anomaly import injection_mask
from hepml.tasks._entries import build_representation
from hepml.tasks.anomaly.data import SCORES, AnomalyConfig, AnomalyData, anomaly_config
from hepml.tasks.anomaly.data import _model_kind as _model_kind
from hepml.tasks.anomaly.file_scan import scan
from hepml.tasks.anomaly.outputs import ranked_rows, write_ranked
from hepml.tasks.anomaly.scores import ScanResult, chunk_scores, score_data
from hepml.tasks.anomaly.task import run, summarise

__all__ = ["AnomalyConfig", "AnomalyData", "ScanResult", "run", "scan", "score_data",
           "chunk_scores", "injection_mask", "SCORES", "anomaly_config", "build_representation",
           "ranked_rows", "summarise", "write_ranked"]
