"""Databento DBN files (v1-v3, plain or zstd) via ``databento_dbn``: MBO (L3 -> L2), trades, mbp-1.

``parser`` is pure (decoded records in, events out); ``reader`` is the only file I/O.
"""
