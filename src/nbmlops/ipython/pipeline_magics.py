"""``%pipeline``: placeholder until the magic lands."""

from IPython.core.magic import Magics, magics_class


@magics_class
class PipelineMagics(Magics):
    pass
