"""The web layer around the API: the lookup page (``views.py``), middleware (``middleware.py``:
database-down answers and Server-Timing) and bounded request uploads (``uploads.py``)."""
