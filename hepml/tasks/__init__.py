"""Tasks: one module per job, composing io, representations, models, training and evaluation.

Modules are imported on use (``from hepml.tasks import tagging``) so that the CLI's
``--help`` stays fast.
"""

__all__ = ["tagging"]
