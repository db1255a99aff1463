"""The benchmark suite behind ``benchmarks/run.py`` and ``benchmarks/precision_table.py``.

- :mod:`.machine` describes the machine (CPU, cores, RAM, versions, load).
- :mod:`.models` builds the models every format is measured on, deterministically.
- :mod:`.timing` times things: medians in-process, fresh processes for cold starts.
- :mod:`.cold` is the child script a cold start runs (stdlib only at import).
- :mod:`.cases` measures each model with each format; :mod:`.signing` the signers.
- :mod:`.report` turns the measurements into markdown tables and target verdicts;
  :mod:`.results` writes them into ``benchmarks/RESULTS.md`` section by section.
"""
