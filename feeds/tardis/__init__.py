"""Tardis.dev data: normalized JSONL messages (tardis-node) and downloadable CSV datasets.

``normalized`` and ``csv_formats`` are pure parsers; ``reader`` is the only file I/O.
"""
