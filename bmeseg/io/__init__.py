"""Reading and writing: DICOM (index, assemble, write), NIfTI, atomic file output."""
