"""Leaderboards and their pages: pure functions of the result tables.

  stats   means with 95 % t-intervals, Welch intervals of differences
  board   the Board of a results set (scores ranked per dataset, stability, similarity, sample analysis)
  text    Markdown and rich renderers, and the formatters every renderer shares
  html    the self-contained HTML page (inline SVG heatmaps and sample images)
  export  reading a results root or an exported folder, and writing an export

The main entry points are importable from here.
"""
from wsbench.reporting.board import Board, Comparison, build, compare, compare_sets
from wsbench.reporting.export import Tables, attach_images, load, write_export
from wsbench.reporting.html import render_html
from wsbench.reporting.text import render_comparison_markdown, render_comparison_rich, render_markdown, render_rich

__all__ = [
    "Board", "Comparison", "Tables", "attach_images", "build", "compare", "compare_sets", "load",
    "render_comparison_markdown", "render_comparison_rich", "render_html", "render_markdown", "render_rich",
    "write_export",
]
