"""Kernel-side helpers for the JupyterLab extension (labextension/): generated-cell insertion.

Importing this package does not import IPython or ipykernel; the functions do, when called.
"""

from .cells import COMM_TARGET, CellRequest, current_cell_id, insert_cell_below, request_cell_below

__all__ = ["COMM_TARGET", "CellRequest", "current_cell_id", "insert_cell_below", "request_cell_below"]
