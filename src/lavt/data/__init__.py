"""Datasets for LAVT, one module per concept.

- ``files``: :class:`~lavt.data.files.DatasetError` and reading a dataset's files (one-line errors
  that name the file); ``transforms``: the one image / mask preprocessing every loader uses.
- ``refer``: RefCOCO, RefCOCO+ and RefCOCOg read from the ``refer`` layout.
- ``ytvos_index`` (Ref-YouTube-VOS on disk) and ``ytvos`` (its clips, pseudo-videos from images,
  batching, the CodaLab submission); ``davis``: Ref-DAVIS17 behind the same interfaces.
- ``annotated_frame``: clips scored on one annotated frame, shared by ``a2d`` (A2D-Sentences) and
  ``jhmdb`` (JHMDB-Sentences).
- ``joint``: image and video batches in one run.
- ``check`` (``lavt data check``), with ``check_report`` (what it reports) and ``check_a2d_jhmdb``.
- ``synthetic``: generated datasets in the published layouts.
"""
