"""Error types; the CLI maps each to the exit code that the contract (docs/SPEC.md) assigns it."""


class CodeclError(Exception):
    """Base class; `exit_code` is what the CLI returns."""

    exit_code = 1


class ConfigError(CodeclError):
    """Bad configuration or command-line arguments (exit 2)."""

    exit_code = 2


class DataError(CodeclError):
    """Bad or missing data (exit 3)."""

    exit_code = 3


class CheckpointError(CodeclError):
    """Bad, corrupted or mismatched checkpoint / adapter / results file (exit 4)."""

    exit_code = 4


class AdapterMismatchError(CheckpointError):
    """A saved module was trained on another base model (fingerprint differs)."""


class DivergenceError(CodeclError):
    """Training produced non-finite losses too many times in a row (exit 5)."""

    exit_code = 5


class UnknownLanguageError(ConfigError):
    """A language the loaded run has no trained modules for (exit 2; HTTP 404 when serving)."""

    def __init__(self, language: str, known: list[str]):
        self.language, self.known = language, list(known)
        super().__init__(f"no trained modules for language {language!r}; known: {', '.join(self.known)}")
