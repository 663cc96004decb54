"""The ``nbmlops`` command line: thin commands over nbmlops.api."""
