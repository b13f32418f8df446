"""Stands for `__main__` in a pytest-xdist worker (tests/conftest.py): deliberately empty.

A worker runs as `python -c ...`, so its `__main__` has neither `__spec__` nor `__file__`, and pyspark reads exactly
that as "running doctests": importing `pyspark.sql.connect` (which great_expectations does) then prints "Skipping
doctests" and calls `sys.exit(0)` in the middle of a test. conftest.py points the worker's `__main__.__file__` here.
A process that the multiprocessing "spawn" start method makes from a worker runs this file as its `__mp_main__`, so it
must stay free of side effects.
"""
