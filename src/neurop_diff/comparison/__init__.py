"""Comparing runs, without Lightning: several runs' results (``runs.py``) as one table per metric
(``compare.py``), written as Markdown / CSV / LaTeX, a figure and a W&B table (``tables.py``), the paper's
numbers as reference rows (``paper.py``), and the experiment sets of the paper's tables (``experiments.py``).

It sits above ``evaluation/`` (one run's metrics and files), which never imports it.
"""
