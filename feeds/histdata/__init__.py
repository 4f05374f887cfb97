"""HistData.com FX tick files (``YYYYMMDD HHMMSSmmm,bid,ask,volume``): ``parser`` is pure text -> Quote."""
