"""Task ``calosim``: learn calorimeter showers with a generator and check it against them.

``hepml run workflows/calogan.yaml`` (a CaloGAN) or ``hepml run workflows/caloflow.yaml``
(CaloFlow, two normalizing flows):

1. reads the showers (hepml ROOT files, CaloGAN HDF5 or calorimeter-challenge HDF5) and
   splits them into training, validation and test showers with the workflow seed;
2. trains the generator with the shared trainer (checkpoints every epoch, ``--resume``),
   the best epoch chosen by the validation loss (the CaloGAN's moment distance, the
   flows' negative log-likelihood);
3. generates one shower for every test shower, at the same incident energy and particle,
   and compares the two samples as the calorimeter challenge does: the CaloGAN
   shower-shape observables and their separation powers, a classifier two-sample test on
   the high-level observables and one on the cells divided by the incident energy (low
   level; AUC 0.5 means indistinguishable), each beside its floor (the same test between
   two halves of the test showers), and the energy response and resolution against
   incident energy;
4. times the generator, writes the generated showers, plots, ``metrics.json`` and the report.

``hepml simulate --checkpoint C --energy 50 --n 100000 --out showers.root`` then generates
showers on demand (:func:`simulate`), in batches, on the best device.

The package: :mod:`~hepml.tasks.calosim.data` (the ``calosim:`` section and the showers),
:mod:`~hepml.tasks.calosim.task` (:func:`run`), :mod:`~hepml.tasks.calosim.evaluate` (the
classifier tests with their floors, the resolution agreement, :func:`compare`) and
:mod:`~hepml.tasks.calosim.generate` (generation, its timing, :func:`simulate`).
"""

from hepml.tasks.calosim.data import (
    GENERATORS,
    CaloSimConfig,
    _model_kind,  # noqa: F401  (the model kind of a workflow, for tests and tools)
    cell_layout,
    load_showers,
    parameter_counts,
)
from hepml.tasks.calosim.evaluate import (
    LOW_LEVEL_CLASSIFIER,
    classifier_tests,
    compare,
    low_level_features,
    resolution_agreement,
)
from hepml.tasks.calosim.generate import generate_like, generation_speed, load_generator, simulate
from hepml.tasks.calosim.task import GOAL_AUC, run, summarise

__all__ = ["GENERATORS", "GOAL_AUC", "LOW_LEVEL_CLASSIFIER", "CaloSimConfig", "cell_layout",
           "classifier_tests", "compare", "generate_like", "generation_speed",
           "load_generator", "load_showers", "low_level_features", "parameter_counts",
           "resolution_agreement", "run", "simulate", "summarise"]
