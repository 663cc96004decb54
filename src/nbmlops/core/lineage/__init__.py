"""Lineage: which data and cells produced which model, from the tracked runs' own records."""
