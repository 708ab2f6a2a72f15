"""Old name of :mod:`iclbook.implicit.data`, kept only for importers outside this package
(``tests/test_internals.py``, ``tests/test_implicit_hf.py``): delete it once they import ``data``."""

from iclbook.implicit.data import *  # noqa: F401,F403
