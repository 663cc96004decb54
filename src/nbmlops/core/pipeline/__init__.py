"""Notebooks as pipeline steps: parameters, execution in real kernels, cached DAGs, sweeps.

Plain modules (no IPython, no ipywidgets): the CLI, the ``%pipeline``/``%sweep`` magics and
the Python API are adapters over them.
"""
