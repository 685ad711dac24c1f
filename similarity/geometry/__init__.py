"""Geometry with no Django: distances on the Earth (``geo.py``), location priors (``priors.py``), the
coordinate estimate from matches (``estimate.py``), evaluation figures (``evaluation.py``) and the
geometric verification of a match with local image features (``verification.py``)."""
