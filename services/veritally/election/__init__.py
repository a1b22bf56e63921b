"""Election definitions: loading, checking and synthetic generation.

The validated, indexed view of a definition (:class:`ElectionIndex`) lives in the SDK,
because media clients need it for navigation and recount; this package reads the files
an electoral authority publishes and writes synthetic ones.
"""

from veritally.election.loader import (
    ActaFileError,
    ActaMapping,
    DefinitionError,
    ElectionFiles,
    MissingActa,
    load_acta_rows,
    load_actas,
    load_definition,
    load_election,
)

__all__ = [
    "ActaFileError",
    "ActaMapping",
    "DefinitionError",
    "ElectionFiles",
    "MissingActa",
    "load_acta_rows",
    "load_actas",
    "load_definition",
    "load_election",
]
