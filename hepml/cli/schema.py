"""``hepml schema``: the JSON Schema of workflow files, for editors."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``schema``."""
    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of workflow files (for editor completion and checks)",
        description="Print the JSON Schema of a workflow file: every section, each "
        "representation and model kind with its keys, types, defaults and descriptions. "
        "Save it and point the YAML language server at it, e.g. a first line "
        "'# yaml-language-server: $schema=hepml-workflow.schema.json' in the workflow.",
    )
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the schema to FILE instead of standard output")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hepml.tasks.workflow import workflow_schema

    text = json.dumps(workflow_schema(), indent=2) + "\n"
    if args.output:
        from hepml.io.atomic import write_text

        write_text(args.output, text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0
