"""Old name of :mod:`iclbook.implicit.model` and :mod:`iclbook.implicit.pretrain`, kept only for
importers outside this package (``tests/test_internals.py``, ``tests/test_implicit_hf.py``):
delete it once they import ``model``."""

from iclbook.implicit.model import *  # noqa: F401,F403
from iclbook.implicit.pretrain import *  # noqa: F401,F403
