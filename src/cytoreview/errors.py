"""Exceptions that carry a message a user can act on.

Every error raised on bad input is a :class:`CytoreviewError`; the CLI prints its message on one line and exits
non-zero, and the napari widgets show it in a notification. Subclasses say which part refused the input.
"""


class CytoreviewError(Exception):
    """Base class: bad input or a state the user can fix. The message names the file, key or value at fault."""


class ImageReadError(CytoreviewError):
    """An image or slide could not be opened or read (corrupt, truncated, unsupported)."""


class PackError(CytoreviewError):
    """A model pack (card or ONNX file) is invalid or does not match its card."""


class ProjectError(CytoreviewError):
    """A project store cannot be opened or written."""


class ProjectReadOnlyError(ProjectError):
    """A change was asked of a project opened read-only (its folder or database file cannot be written)."""


class ExportError(CytoreviewError):
    """A label set cannot be exported or imported."""


class MissingExtraError(CytoreviewError):
    """A command needs an optional part that is not installed (the message names the pip extra that brings it)."""
