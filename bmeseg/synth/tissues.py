"""Tissue classes, relaxation parameters and MR signal equations for the phantoms.

Every voxel of a phantom holds one :class:`Tissue` label. Marrow voxels are
a three-compartment mixture (fat, normal marrow water, edema water) whose
fractions are stored separately; every other tissue is a single compartment.

Relaxation values are rounded literature figures (see ``DOMAIN.md`` of the
project notes): good enough to reproduce the contrast a reader expects, not
a quantitative reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Compartment",
    "KNEE_TISSUES",
    "Relaxation",
    "SequenceParams",
    "Tissue",
    "compartment_signal",
    "relaxation_table",
    "spin_echo_signal",
    "stir_signal_signed",
    "gradient_echo_signal",
]


class Tissue(IntEnum):
    """Labels of the phantom's tissue map (``uint8``)."""

    AIR = 0
    SKIN = 1
    FAT = 2  # subcutaneous and intermuscular fat
    FAT_PAD = 3  # Hoffa / periarticular fat pads (same signal as FAT)
    MUSCLE = 4
    CORTEX = 5  # cortical bone and sclerotic lines (physeal scar)
    MARROW = 6  # water/fat mixture, see fat_fraction / edema maps
    CARTILAGE = 7
    FLUID = 8  # synovial fluid, effusion
    CYST = 9  # fluid-filled cysts (subchondral, Baker): a BME mimic
    TENDON = 10  # tendons, ligaments, menisci (short T2)
    VEIN = 11  # slow-flowing venous blood (bright on STIR)
    ARTERY = 12  # flow void
    # added with the SIJ anatomy (labels 0-12 are the knee's set)
    NERVE = 13  # nerve roots / ganglia in the sacral foramina (moderately bright on STIR)
    CSF = 14  # cerebrospinal fluid (thecal sac in the lumbar and upper sacral canal)
    DISC = 15  # nucleus pulposus of an intervertebral disc
    BOWEL = 16  # bowel / rectal content (intermediate, mixed signal)
    GAS = 17  # bowel gas (signal void)


class Compartment(IntEnum):
    """Signal compartments: one per non-marrow tissue plus the marrow parts."""

    AIR = 0
    SKIN = 1
    FAT = 2
    MUSCLE = 3
    CORTEX = 4
    CARTILAGE = 5
    FLUID = 6
    TENDON = 7
    BLOOD = 8
    FLOW_VOID = 9
    MARROW_WATER = 10  # water of normal (mostly yellow) marrow: red-marrow-like relaxation
    EDEMA_WATER = 11  # free water of marrow edema
    NERVE = 12
    CSF = 13
    DISC = 14  # nucleus pulposus
    BOWEL = 15  # faecal / bowel content
    # added in session 7 (the SIJ marrow had the knee's yellow-marrow water, which left it darker than muscle
    # on STIR; real sacral marrow is brighter)
    MIXED_MARROW_WATER = 16  # water of adult axial (mixed, cellular) marrow


#: which compartment a (non-marrow) tissue label is made of
TISSUE_COMPARTMENT: dict[Tissue, Compartment] = {
    Tissue.AIR: Compartment.AIR,
    Tissue.SKIN: Compartment.SKIN,
    Tissue.FAT: Compartment.FAT,
    Tissue.FAT_PAD: Compartment.FAT,
    Tissue.MUSCLE: Compartment.MUSCLE,
    Tissue.CORTEX: Compartment.CORTEX,
    Tissue.MARROW: Compartment.FAT,  # overwritten by the marrow mixture
    Tissue.CARTILAGE: Compartment.CARTILAGE,
    Tissue.FLUID: Compartment.FLUID,
    Tissue.CYST: Compartment.FLUID,
    Tissue.TENDON: Compartment.TENDON,
    Tissue.VEIN: Compartment.BLOOD,
    Tissue.ARTERY: Compartment.FLOW_VOID,
    Tissue.NERVE: Compartment.NERVE,
    Tissue.CSF: Compartment.CSF,
    Tissue.DISC: Compartment.DISC,
    Tissue.BOWEL: Compartment.BOWEL,
    Tissue.GAS: Compartment.AIR,
}

#: the tissue labels of the original knee phantom (``truth.json`` of a knee study lists only these)
KNEE_TISSUES: tuple[Tissue, ...] = tuple(t for t in Tissue if t <= Tissue.ARTERY)


@dataclass(frozen=True)
class Relaxation:
    """Relative proton density and relaxation times (ms) of one compartment."""

    pd: float
    t1_ms: float
    t2_ms: float


# (PD, T1 ms, T2 ms)
_TABLE_15T: dict[Compartment, tuple[float, float, float]] = {
    Compartment.AIR: (0.0, 1000.0, 1.0),
    Compartment.SKIN: (0.65, 600.0, 35.0),
    Compartment.FAT: (1.0, 260.0, 80.0),
    Compartment.MUSCLE: (0.85, 1000.0, 40.0),
    Compartment.CORTEX: (0.05, 1000.0, 1.0),
    Compartment.CARTILAGE: (0.75, 1000.0, 40.0),
    Compartment.FLUID: (1.0, 3500.0, 1000.0),
    Compartment.TENDON: (0.35, 600.0, 8.0),
    Compartment.BLOOD: (0.9, 1400.0, 200.0),
    Compartment.FLOW_VOID: (0.03, 1400.0, 50.0),
    Compartment.MARROW_WATER: (0.9, 600.0, 50.0),
    Compartment.EDEMA_WATER: (0.8, 1400.0, 95.0),
    Compartment.NERVE: (0.8, 1100.0, 90.0),
    Compartment.CSF: (1.0, 4200.0, 2000.0),
    Compartment.DISC: (0.85, 1200.0, 110.0),
    Compartment.BOWEL: (0.75, 1100.0, 70.0),
    # chosen so that sacral/iliac marrow at fat fraction ~0.27 sits at ~0.4 of the muscle-to-fat T1 range
    # and ~1.2x muscle on the pelvic STIR (TE ~60 ms), as in the readers' normal-marrow regions of the
    # real SIJ scans 1007/1016
    Compartment.MIXED_MARROW_WATER: (0.95, 900.0, 50.0),
}
_TABLE_3T: dict[Compartment, tuple[float, float, float]] = {
    Compartment.AIR: (0.0, 1000.0, 1.0),
    Compartment.SKIN: (0.65, 850.0, 32.0),
    Compartment.FAT: (1.0, 370.0, 70.0),
    Compartment.MUSCLE: (0.85, 1400.0, 35.0),
    Compartment.CORTEX: (0.05, 1200.0, 1.0),
    Compartment.CARTILAGE: (0.75, 1250.0, 36.0),
    Compartment.FLUID: (1.0, 4000.0, 900.0),
    Compartment.TENDON: (0.35, 850.0, 7.0),
    Compartment.BLOOD: (0.9, 1900.0, 150.0),
    Compartment.FLOW_VOID: (0.03, 1900.0, 40.0),
    Compartment.MARROW_WATER: (0.9, 800.0, 45.0),
    Compartment.EDEMA_WATER: (0.8, 1800.0, 85.0),
    Compartment.NERVE: (0.8, 1400.0, 80.0),
    Compartment.CSF: (1.0, 4500.0, 1800.0),
    Compartment.DISC: (0.85, 1500.0, 100.0),
    Compartment.BOWEL: (0.75, 1400.0, 60.0),
    Compartment.MIXED_MARROW_WATER: (0.95, 1200.0, 43.0),
}


def relaxation_table(field_strength_t: float) -> dict[Compartment, Relaxation]:
    """Compartment relaxation parameters at 1.5 T or 3 T.

    Parameters
    ----------
    field_strength_t : float
        1.5 or 3.0 (tesla); other values use the nearer table.
    """
    table = _TABLE_15T if abs(field_strength_t - 1.5) <= abs(field_strength_t - 3.0) else _TABLE_3T
    return {c: Relaxation(*v) for c, v in table.items()}


@dataclass(frozen=True)
class SequenceParams:
    """What the signal equation needs to know about a pulse sequence.

    Parameters
    ----------
    kind : str
        ``'se'`` (spin echo / TSE), ``'stir'`` (magnitude inversion recovery),
        ``'se_fs'`` (spin echo with spectral fat saturation) or ``'gre'``.
    tr_ms, te_ms : float
        Repetition and echo time, ms.
    ti_ms : float or None
        Inversion time, ms (``'stir'`` only).
    flip_deg : float
        Excitation flip angle (``'gre'`` only), degrees.
    fat_residual : float
        Fraction of fat signal left after fat saturation (``'se_fs'``).
    """

    kind: str
    tr_ms: float
    te_ms: float
    ti_ms: float | None = None
    flip_deg: float = 90.0
    fat_residual: float = 0.06


def spin_echo_signal(pd: ArrayLike, t1_ms: ArrayLike, t2_ms: ArrayLike, *, tr_ms: float,
                     te_ms: float) -> NDArray[np.float64]:
    """Spin-echo signal ``PD (1 - exp(-TR/T1)) exp(-TE/T2)`` (arbitrary units, >= 0).

    Examples
    --------
    >>> round(float(spin_echo_signal(1.0, 260.0, 80.0, tr_ms=550, te_ms=11)), 3)
    0.766
    """
    pd, t1, t2 = (np.asarray(v, dtype=np.float64) for v in (pd, t1_ms, t2_ms))
    return pd * (1.0 - np.exp(-tr_ms / t1)) * np.exp(-te_ms / t2)


def stir_signal_signed(pd: ArrayLike, t1_ms: ArrayLike, t2_ms: ArrayLike, *, tr_ms: float,
                       te_ms: float, ti_ms: float) -> NDArray[np.float64]:
    """Signed STIR signal ``PD (1 - 2 exp(-TI/T1) + exp(-TR/T1)) exp(-TE/T2)``.

    The scanner shows the magnitude of the voxel's *summed* signed signal, so
    mixtures must be summed with this function and the absolute value taken after.

    Examples
    --------
    >>> fat = stir_signal_signed(1.0, 260.0, 80.0, tr_ms=4000, te_ms=35, ti_ms=180.2)
    >>> abs(float(fat)) < 1e-3   # TI = T1 ln 2 nulls fat
    True
    """
    pd, t1, t2 = (np.asarray(v, dtype=np.float64) for v in (pd, t1_ms, t2_ms))
    return pd * (1.0 - 2.0 * np.exp(-ti_ms / t1) + np.exp(-tr_ms / t1)) * np.exp(-te_ms / t2)


def gradient_echo_signal(pd: ArrayLike, t1_ms: ArrayLike, t2_ms: ArrayLike, *, tr_ms: float,
                         te_ms: float, flip_deg: float) -> NDArray[np.float64]:
    """Spoiled gradient-echo signal (T2 used for T2*), for localizers."""
    pd, t1, t2 = (np.asarray(v, dtype=np.float64) for v in (pd, t1_ms, t2_ms))
    a = np.deg2rad(flip_deg)
    e1 = np.exp(-tr_ms / t1)
    return pd * np.sin(a) * (1.0 - e1) / (1.0 - np.cos(a) * e1) * np.exp(-te_ms / t2)


def compartment_signal(seq: SequenceParams, field_strength_t: float) -> dict[Compartment, float]:
    """Signed signal of each pure compartment for one sequence.

    For ``'stir'`` the values are signed (take the magnitude after mixing);
    for the other kinds they are non-negative. Under ``'se_fs'`` the fat
    compartment is scaled by ``seq.fat_residual``.
    """
    out: dict[Compartment, float] = {}
    for comp, r in relaxation_table(field_strength_t).items():
        if seq.kind in ("se", "se_fs"):
            s = spin_echo_signal(r.pd, r.t1_ms, r.t2_ms, tr_ms=seq.tr_ms, te_ms=seq.te_ms)
            if seq.kind == "se_fs" and comp == Compartment.FAT:
                s = s * seq.fat_residual
        elif seq.kind == "stir":
            if seq.ti_ms is None:
                raise ValueError("'ti_ms' must be set for a 'stir' sequence")
            s = stir_signal_signed(r.pd, r.t1_ms, r.t2_ms, tr_ms=seq.tr_ms, te_ms=seq.te_ms, ti_ms=seq.ti_ms)
        elif seq.kind == "gre":
            s = gradient_echo_signal(r.pd, r.t1_ms, r.t2_ms, tr_ms=seq.tr_ms, te_ms=seq.te_ms,
                                     flip_deg=seq.flip_deg)
        else:
            raise ValueError(f"'kind' must be one of {{'se', 'se_fs', 'stir', 'gre'}}; got {seq.kind!r}")
        out[comp] = float(s)
    return out
