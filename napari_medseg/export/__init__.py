"""What leaves the program: the headless job that segments a scan and writes its results
(:func:`~napari_medseg.export.run.run_segmentation`), the JSON report, result sets that are
never overwritten, and the one-page summary figure."""
