"""The three models of the data path: DNABERT-S and ESM-2 encoders (packed, no remote code) and the MLP classifier.

Imports are lazy so that ``virnucpro prepare`` never pays for loading torch.
"""

_EXPORTS = {
    "ESM2Encoder": "esm2",
    "ESM2Config": "esm2",
    "DNABERTSEncoder": "dnabert_s",
    "DNABERTSConfig": "dnabert_s",
    "MLPClassifier": "classifier",
    "load_classifier": "classifier_files",
    "save_classifier": "classifier_files",
}


def __getattr__(name):
    if name == "UnsafeCheckpointError":
        from ..errors import UnsafeCheckpointError

        return UnsafeCheckpointError
    if name in _EXPORTS:
        import importlib

        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_EXPORTS, "UnsafeCheckpointError"]
