"""The plain-Python core of nbmlops. Nothing under this package imports IPython or Jupyter."""
