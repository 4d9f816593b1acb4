"""Conversion analytics: what each video cost and how fast it went, from the Dagster instance's
records alone (``gather``), as pure computations (``report``) and charts (``plots``)."""
