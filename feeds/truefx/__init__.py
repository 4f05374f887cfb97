"""TrueFX FX tick files (``timestamp,bid,ask`` or TrueFX's raw ``PAIR,YYYYMMDD HH:MM:SS.mmm,bid,ask``)."""
