"""Static HTML reports of dissection results (see :func:`write_reports`).

``dissect report O`` writes ``O/<layer>/report.html`` for every layer and ``O/index.html``.
A report renders LayerResults (dissect.results), from memory after a run or loaded from ``O``.
The plots are SVG drawn by Jinja2 templates (no plotting library on this path).
"""

from .summary import summary_line
from .writer import write_index, write_layer_report, write_reports

__all__ = ["summary_line", "write_index", "write_layer_report", "write_reports"]
