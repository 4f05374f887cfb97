"""Kraken spot REST feed (``GET /0/public/Trades``)."""
