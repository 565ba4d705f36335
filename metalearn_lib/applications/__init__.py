"""Few-shot learning put to work beyond N-way classification: verification and detection.

- :mod:`metalearn_lib.applications.verification`: choosing a verifier's threshold (a target
  false-accept rate, cross-validated accuracy), as face-verification systems do.
- :mod:`metalearn_lib.applications.detection`: one-shot detection by prototype matching (cluttered
  canvases, sliding-window embeddings, non-maximum suppression, average precision).
"""
