"""VirNucPro toolkit: viral sequence identification with DNABERT-S and ESM-2 features.

Data path, one module per step:
FASTA -> ``fasta`` (read, validate) -> ``frames`` (chunk, six frames) -> ``batching`` (token-budget packing)
-> ``models`` (DNABERT-S, ESM-2, classifier) -> ``engine`` / ``distributed`` (1..N GPUs)
-> ``outputs`` (calls, files) -> ``plots`` / ``reports`` (notebooks, HTML, markdown).
"""

__version__ = "0.1.0"
