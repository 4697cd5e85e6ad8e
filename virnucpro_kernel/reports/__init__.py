"""Reports: what the notebooks show, and how they become HTML and markdown pages.

The notebooks in ``notebooks/`` hold narrative, parameters and short cells; the work is done by the public API
(``import virnucpro_kernel as vk``: ``vk.predict``, ``vk.load_run``, ``vk.benchmark``, ``vk.evaluate``) and what
they show is built here, one job per module:

- :mod:`.paths`: the repository root, from wherever a notebook runs (papermill: the root; nbval: ``notebooks/``);
- :mod:`.tables`: the tables a page shows, built from runs, evaluations and benchmark result JSON, and the
  checks a notebook asserts;
- :mod:`.history`: benchmark results over time (result files and their committed versions) for the regression
  page;
- :mod:`.plots`: every figure (``plots.runs``, ``plots.benchmarks``, ``plots.evaluation``), each drawn twice from
  the same data, plotly (interactive, HTML pages) and matplotlib (PNG, markdown pages), into a
  :class:`.figure.Figure`;
- :mod:`.display`: showing tables, notes, warnings and the provenance of the results in a notebook, as HTML for
  the HTML page and as markdown for the markdown page;
- :mod:`.render`: papermill execution of every notebook with a parameter set, nbconvert to HTML and markdown,
  and the index (``templates/index.*.j2``). ``vk.report`` and ``virnucpro report`` call
  :func:`.render.build_reports`.
"""
