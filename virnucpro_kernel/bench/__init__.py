"""Benchmark infrastructure for ``virnucpro benchmark``.

``workloads`` (seeded read presets), ``timing`` (repetitions, memory, MFU), ``host`` (timing host work, in
fresh processes too, without torch), ``monitor`` (GPU sampling log),
``schema`` (result JSON and its markdown rendering), ``regression`` (noise-aware comparison with a baseline).
"""
