"""Reference point for ``run_benchmarks.py``: the pipeline a researcher writes in an afternoon with SimpleITK.

Not part of the package and not a method anyone should use for BME; it is here to
put bmeseg's wall time in context. It is written the straightforward way, with
SimpleITK's defaults wherever a default exists:

* loading: ``sitk.ImageSeriesReader`` (GDCM series ids per folder, the T1 and the
  STIR picked by their SeriesDescription);
* registration: Mattes mutual information (default 50 bins, default sampling =
  every fixed voxel), ``Euler3DTransform`` initialised by
  ``CenteredTransformInitializer(..., GEOMETRY)``, ``RegularStepGradientDescent``
  (learning rate 1, min step 1e-3, 100 iterations, scales from physical shift),
  linear interpolator, one level at full resolution (no pyramid), ITK's default
  thread count;
* resample the T1 onto the STIR grid;
* marrow: Otsu threshold of the T1 (fat is bright), largest components, holes
  filled slice by slice in a Python loop (``BinaryFillhole`` on each 2-D slice);
* BME: STIR above mean + 2 SD of the marrow's STIR and T1 below the marrow's
  median, inside the marrow;
* connected components, lesions under 0.05 mL dropped, volumes from
  ``LabelShapeStatistics``;
* the two masks and the registered T1 written as NIfTI.

Usage (``run_benchmarks.py`` calls :func:`run`)::

    python benchmarks/naive_pipeline.py STUDY_DICOM_DIR OUT_DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import SimpleITK as sitk


def _find_series(dicom_dir: Path) -> dict[str, list[str]]:
    """SeriesDescription -> ordered file names, for every series under ``dicom_dir``."""
    out: dict[str, list[str]] = {}
    folders = sorted({p.parent for p in dicom_dir.rglob("*") if p.is_file()})
    for folder in folders:
        for sid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ():
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid)
            r = sitk.ImageFileReader()
            r.SetFileName(files[0])
            r.ReadImageInformation()
            desc = r.GetMetaData("0008|103e").strip() if r.HasMetaDataKey("0008|103e") else sid
            out[desc] = list(files)
    return out


def _pick(series: dict[str, list[str]], keys: tuple[str, ...]) -> list[str]:
    for desc, files in series.items():
        if any(k in desc.lower() for k in keys) and len(files) > 3:
            return files
    raise SystemExit(f"no series matching {keys} in {sorted(series)}")


def _read(files: list[str]) -> sitk.Image:
    r = sitk.ImageSeriesReader()
    r.SetFileNames(files)
    return sitk.Cast(r.Execute(), sitk.sitkFloat32)


def run(dicom_dir: str | Path, out_dir: str | Path) -> dict[str, float]:
    """Run the straightforward pipeline; returns stage wall times (s) including ``total``."""
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    dicom_dir, out = Path(dicom_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    series = _find_series(dicom_dir)
    t1 = _read(_pick(series, ("t1",)))
    stir = _read(_pick(series, ("tir", "stir")))
    t["load"] = time.perf_counter() - t0

    s = time.perf_counter()
    init = sitk.CenteredTransformInitializer(stir, t1, sitk.Euler3DTransform(),
                                             sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation()
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=100)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(init, inPlace=False)
    tx = reg.Execute(stir, t1)
    t1r = sitk.Resample(t1, stir, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    t["register"] = time.perf_counter() - s

    s = time.perf_counter()
    fat = sitk.OtsuThreshold(t1r, 0, 1)  # above Otsu -> 1
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(fat), minimumObjectSize=2000)
    marrow = sitk.Cast(cc > 0, sitk.sitkUInt8)
    filled = sitk.Image(marrow)
    for k in range(marrow.GetDepth()):  # per-slice hole filling
        sl = sitk.BinaryFillhole(marrow[:, :, k])
        filled = sitk.Paste(filled, sitk.JoinSeries(sl), (*sl.GetSize(), 1), [0, 0, 0], [0, 0, k])
    marrow = filled
    t["marrow"] = time.perf_counter() - s

    s = time.perf_counter()
    st = sitk.LabelStatisticsImageFilter()
    st.Execute(stir, marrow)
    tt = sitk.LabelStatisticsImageFilter()
    tt.Execute(t1r, marrow)
    thr = st.GetMean(1) + 2.0 * st.GetSigma(1)
    bme = (stir > thr) & (t1r < tt.GetMedian(1)) & marrow
    t["edema"] = time.perf_counter() - s

    s = time.perf_counter()
    labels = sitk.ConnectedComponent(bme, True)
    voxel_ml = float(stir.GetSpacing()[0] * stir.GetSpacing()[1] * stir.GetSpacing()[2]) / 1000.0
    labels = sitk.RelabelComponent(labels, minimumObjectSize=max(1, round(0.05 / voxel_ml)))
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(labels)
    _volumes_ml = {lab: shape.GetPhysicalSize(lab) / 1000.0 for lab in shape.GetLabels()}
    t["measure"] = time.perf_counter() - s

    s = time.perf_counter()
    sitk.WriteImage(sitk.Cast(labels, sitk.sitkUInt8), str(out / "bme_mask.nii.gz"))
    sitk.WriteImage(marrow, str(out / "marrow_mask.nii.gz"))
    sitk.WriteImage(t1r, str(out / "t1_registered.nii.gz"))
    t["write"] = time.perf_counter() - s
    t["total"] = time.perf_counter() - t0
    return t


if __name__ == "__main__":
    print(run(sys.argv[1], sys.argv[2]))
