"""Static HTML reports of dissection results (see :func:`write_reports`).

``dissect report O`` writes ``O/<layer>/report.html`` for every layer and ``O/index.html``.
Plots need matplotlib (the ``report`` extra); without it the pages are written without plots.
"""
from .layerdata import LayerData, ReportInputError, find_layer_folders, read_layer
from .summary import layer_summary, summary_line
from .writer import write_index, write_layer_report, write_reports

__all__ = ["LayerData", "ReportInputError", "find_layer_folders", "read_layer", "layer_summary",
           "summary_line", "write_index", "write_layer_report", "write_reports"]
