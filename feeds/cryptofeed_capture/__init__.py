"""cryptofeed raw captures (``raw_data_collection`` v1 files): Kraken, Binance, Coinbase Pro, BitMEX.

Each venue module is a pure parser (lines in, events out); ``reader`` is the only file I/O.
"""
