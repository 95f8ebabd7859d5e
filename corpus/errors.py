"""Errors that name the file, the item or line, and the reason."""

from __future__ import annotations


class MalformedInputError(ValueError):
    """An input file that cannot be parsed; the message names the file, where, and why."""

    def __init__(self, file: str, where: str, reason: str) -> None:
        self.file, self.where, self.reason = file, where, reason
        super().__init__(f"{file}: {where}: {reason}")

    def __reduce__(self) -> tuple[type[MalformedInputError], tuple[str, str, str]]:
        """Pickle by the three parts, so that the error crosses process boundaries (Ray tasks) intact."""
        return type(self), (self.file, self.where, self.reason)
