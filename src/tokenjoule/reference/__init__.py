"""Shipped reference bin tables: cells measured elsewhere (card, date, versions, commands)."""

from tokenjoule.reference.tables import ReferenceTable, list_references, load_reference, reference_store

__all__ = ["ReferenceTable", "list_references", "load_reference", "reference_store"]
