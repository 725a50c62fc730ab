"""User-facing errors: one line on stderr and an exit code, never a traceback."""


class UserError(Exception):
    """Bad input or an unreachable dependency that ends a command (default exit 2)."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
