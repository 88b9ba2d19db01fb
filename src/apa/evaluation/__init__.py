"""Evaluation: metrics (metrics.py, no torch), predictions matched to the reference items
(match.py), the metrics of a run (evaluate.py), its markdown table (markdown.py) and plots
(plots.py), several runs laid out as the paper's tables (report.py) beside the published
numbers (reference_numbers.py)."""
