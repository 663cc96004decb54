"""``nbmlops.data``: versioned data from Python. The functions live in :mod:`nbmlops.api.data`;
this name is kept because it reads well in a notebook (``nbmlops.data.commit(df, "sales")``)."""

from nbmlops.api.data import checkout, commit, diff, load, log, ls, show, store, validate

__all__ = ["checkout", "commit", "diff", "load", "log", "ls", "show", "store", "validate"]
