"""All bmeseg exceptions, in one place.

Every error refines a built-in so callers that do not know bmeseg can still catch
it sensibly (``except ValueError``). Each class carries the CLI exit code that
:func:`bmeseg.cli.main` maps it to.
"""

from __future__ import annotations

__all__ = [
    "BmesegError",
    "InputError",
    "DicomReadError",
    "GeometryError",
    "SeriesNotFoundError",
    "ConfigError",
    "OutputExistsError",
    "RegistrationError",
    "MissingDependencyError",
]


class BmesegError(Exception):
    """Base class of every error bmeseg raises on purpose."""

    exit_code: int = 1


class InputError(BmesegError, ValueError):
    """The input (path, file or argument) is unusable. Exit code 2."""

    exit_code = 2


class DicomReadError(InputError):
    """A DICOM file or series cannot be read or assembled. Exit code 2."""


class GeometryError(InputError):
    """A series' geometry is inconsistent (sheared stack, missing slices, bad affine)."""


class ConfigError(InputError):
    """A pipeline setting is invalid; the message names the key."""


class OutputExistsError(InputError, FileExistsError):
    """Outputs exist and ``force`` was not given."""


class SeriesNotFoundError(BmesegError, LookupError):
    """No usable T1 + fat-suppressed fluid-sensitive pair. Exit code 3.

    The message lists every series found with its classification and the
    reason it was not used.
    """

    exit_code = 3


class RegistrationError(BmesegError, RuntimeError):
    """Registration failed outright (not merely suspicious)."""


class MissingDependencyError(BmesegError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    exit_code = 2

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package '{package}'; "
            f"install it with: pip install 'bmeseg[{extra}]'"
        )
        self.package = package
        self.extra = extra
