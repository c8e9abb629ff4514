"""The procedure catalog moved to the warehouse package (convergence.warehouse.catalog); these names stay
importable from here for the callers that still use this path."""

from convergence.warehouse.catalog import (
    HASH_PREFIX,
    PROCEDURES_SUBDIR,
    ProcedureCatalog,
    ProcedureFile,
    ProcedureNotFound,
    procedure_files,
)

__all__ = ["HASH_PREFIX", "PROCEDURES_SUBDIR", "ProcedureCatalog", "ProcedureFile", "ProcedureNotFound",
           "procedure_files"]
