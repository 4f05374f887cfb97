"""Feeds: one folder per source, each with a pure parser apart from its I/O handler."""
