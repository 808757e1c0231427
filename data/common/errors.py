"""The project's exception: every user-facing error names the file, the field and the fix."""
from __future__ import annotations


class SpotMAEError(Exception):
    """A user error: bad input, bad config, missing file. Printed as one line by the CLIs."""

    def __init__(self, message: str, *, path=None, field: str | None = None, fix: str | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.field = field
        self.fix = fix
        parts = []
        if self.path:
            parts.append(self.path)
        if field:
            parts.append(field)
        head = ": ".join(parts)
        text = f"{head}: {message}" if head else message
        if fix:
            text += f" ({fix})"
        super().__init__(text)


class ConfigError(SpotMAEError):
    """A config file or override is wrong."""

    def relocated(self, path=None, field: str | None = None) -> "ConfigError":
        """The same error told about another file (or override) and/or a fuller dotted field name."""
        return type(self)(self.message, path=path if path is not None else self.path,
                          field=field if field is not None else self.field, fix=self.fix)


class DataError(SpotMAEError):
    """An input file (video, annotation, shard) is wrong."""
