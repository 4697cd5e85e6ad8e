"""Errors users see. Each is reported by the CLI as one line, ``virnucpro: error: ...``, exit status 2."""


class VirNucProError(Exception):
    """A problem with the user's input, files or settings (not a bug)."""


class InputError(VirNucProError):
    """Bad input file: names the file and, where it applies, the record."""

    def __init__(self, path, message, record=None):
        self.path = str(path)
        self.record = record
        where = f"{self.path}"
        if record is not None:
            where += f": record '{record}'"
        super().__init__(f"{where}: {message}")


class CheckpointError(VirNucProError):
    """A model file that is missing, malformed, or does not match the expected shapes."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that would import or call code when unpickled. Nothing in it was run."""
