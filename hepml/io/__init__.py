"""Input and output: the only layer that opens files.

Reading is chunked and validated (:mod:`hepml.io.reading`); writing makes TTrees and
friend trees atomically (:mod:`hepml.io.writing`); workflow branch expressions live in
:mod:`hepml.io.expressions`; TrackML's CSV events are read by :mod:`hepml.io.trackml`.
"""

from hepml.io.dask_io import FileCheck, check_file, dask_chunks
from hepml.io.expressions import parse as parse_expression
from hepml.io.reading import (
    Chunk,
    ChunkSpec,
    Source,
    evaluate_fields,
    expand_files,
    file_checksum,
    iterate,
    num_entries,
    open_tree,
    read,
    resolve_fields,
)
from hepml.io.trackml import read_trackml, read_trackml_event
from hepml.io.writing import (
    METADATA_KEY,
    read_metadata,
    write_friend_tree,
    write_friend_trees,
    write_tree,
    write_tree_batches,
)

__all__ = [
    "Chunk",
    "ChunkSpec",
    "METADATA_KEY",
    "FileCheck",
    "Source",
    "check_file",
    "dask_chunks",
    "evaluate_fields",
    "expand_files",
    "file_checksum",
    "iterate",
    "num_entries",
    "open_tree",
    "parse_expression",
    "read",
    "read_metadata",
    "read_trackml",
    "read_trackml_event",
    "resolve_fields",
    "write_friend_tree",
    "write_friend_trees",
    "write_tree",
    "write_tree_batches",
]
