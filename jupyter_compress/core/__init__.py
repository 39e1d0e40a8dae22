"""Jupyter-free core: configs, selection, plans, registry, apply, reports, metrics.

Imports torch and numpy only (plus PyYAML for plans).
"""
