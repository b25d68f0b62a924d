"""Tasks: one module or small package per job, composing the layers below.

The jobs (tagging, tracking, anomaly, dqm, calosim, export) compose io,
representations, models, training and evaluation; a job never imports another. What
every job may use lives in modules that are no job: ``_job`` (the result), ``_entries``
(labelled entries read into model inputs), ``rundir``, ``scoring`` (dask) and
``workflow`` (what each task accepts).

Modules are imported on use (``from hepml.tasks import tagging``) so that the CLI's
``--help`` stays fast.
"""

__all__ = ["tagging"]
