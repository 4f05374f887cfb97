"""File feed of freqtrade trade dumps (``<PAIR>-trades.json[.gz]``)."""
