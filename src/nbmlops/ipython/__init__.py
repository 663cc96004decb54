"""IPython adapters: the only package that imports IPython."""
