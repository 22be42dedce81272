"""bmeseg: find bone marrow edema (BME) on MRI from a T1 and a fat-suppressed fluid-sensitive series."""

from __future__ import annotations

__version__ = "0.1.0"
