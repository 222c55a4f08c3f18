"""The one exception type the CLI turns into a plain message and exit code 2."""


class ExportError(Exception):
    """Bad input from the user (unknown family, unreachable source, incomplete checkpoint config)."""
