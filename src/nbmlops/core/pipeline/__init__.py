"""Notebooks as pipeline steps: parameters, execution in real kernels, cached DAGs, sweeps.

Plain modules (no IPython, no ipywidgets): the CLI, the ``%pipeline``/``%sweep`` magics and
the Python API are adapters over them.

- ``spec``, ``params``, ``notebook``: a pipeline file, a notebook's parameters cell, its code.
- ``execute``: one notebook in one kernel (papermill); ``executors``: local threads or Dask.
- ``scheduler``: the step scheduler (ready steps, warm kernels, the event loop, ``StepStatus``).
- ``recorder``: each executed notebook as an MLflow run.
- ``runner``: pipeline and notebook runs (cache decisions, ``--resume``); ``report``, ``cache``,
  ``lock`` serve it.
- ``sweep``: Optuna studies over a notebook; ``space`` (the search space), ``trial_runs`` (trials
  on the scheduler), ``trials`` (their reports and journals), ``sweep_outputs`` (plots, files).
- ``reproduce``: a recorded run run again and compared; ``reproduce_inputs``,
  ``reproduce_report``.
- ``events``: the progress events every renderer consumes; ``formatting``: shared formatters.
"""
