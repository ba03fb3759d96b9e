"""The bundled Burgers 1D sample: its data files, its baseline (``baseline/``), and the
modules that generate them (``python -m gates.sample.generate``; never imported at runtime)."""
