"""``hepml export``: a trained checkpoint -> ONNX, checked with onnxruntime."""

from __future__ import annotations

import argparse

from hepml.cli._args import parse_branches, positive_int
from hepml.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``export``."""
    p = sub.add_parser(
        "export",
        help="export a trained model to ONNX (checked with onnxruntime)",
        description="Export the model of a checkpoint to ONNX with dynamic axes (batch size, "
        "and particles, nodes, hits, edges or steps where the model allows), check it with "
        "onnxruntime (CPUExecutionProvider) on real inputs built as in training, at two "
        "batch sizes and two graph/sequence sizes and a batch of one, against the torch "
        "model in eval mode: max|onnx - torch| / max(max|torch|, 1e-12) <= 1e-5 per output "
        "(--tolerance). The file is written "
        "only if the check passes, with OUT's stem + .preprocessing.json beside it "
        "(representation, branches, classes, input/output names and shapes, normalisation, "
        "versions, checkpoint SHA-256). Needs pip install -e \".[onnx]\".",
    )
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint of a run, e.g. runs/NAME-.../checkpoint_best.pt")
    p.add_argument("--out", required=True, help="ONNX file to write, e.g. model.onnx")
    p.add_argument("--opset", type=int,
                   help="ONNX opset (default: the exporter's; 20 with torch 2.13)")
    p.add_argument("--check-file", dest="check_files", action="append", metavar="FILE.root",
                   help="file (or glob) to read the check inputs from; repeatable (default: "
                   "the checkpoint's training files)")
    p.add_argument("--n-check", type=positive_int, default=256,
                   help="entries read for the check, the first ones (default: %(default)s)")
    p.add_argument("--tree", help="tree of the check files (default: the training one)")
    p.add_argument("--branches", metavar="YAML",
                   help="branch mapping of the check files, as YAML (default: the training one)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="largest accepted max|onnx - torch| / max(max|torch|, 1e-12) per output "
                   "(default: 1e-5; 1e-4 for caloflow)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hepml.tasks import export

    if args.tolerance is not None and not args.tolerance > 0:
        raise ConfigError(f"--tolerance must be positive, got {args.tolerance}")
    branches = parse_branches(args.branches)
    result = export.export(args.checkpoint, args.out, opset=args.opset,
                           check_files=args.check_files, n_check=args.n_check, tree=args.tree,
                           branches=branches, tolerance=args.tolerance, progress=print)
    print(export.format_table(result.cases, result.tolerance))
    print(f"wrote {result.path} (opset {result.opset}, max rel diff {result.max_rel:.2e})")
    print(f"wrote {result.preprocessing}")
    return 0
