"""pytest gates for physics ML pipelines: regression, physics and promotion checks of an
evaluation against a versioned champion baseline, reported locally and to W&B.

``pytest gates/`` runs the checks; :func:`gates.api.run_gates` runs them in-process.
"""

__version__ = "0.1.0"
