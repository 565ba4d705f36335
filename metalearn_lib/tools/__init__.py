"""Maintenance tools for the book (not needed to use the library).

- ``python -m metalearn_lib.tools.sync_notebooks [--check] [ROOT]``: the standard opening cells of
  every chapter notebook and their paired ``.ipynb`` copies for Colab.
- ``python -m metalearn_lib.tools.vendor_mathjax [ROOT]``: refresh the MathJax copy the offline
  HTML book serves (``chapters/_vendor/mathjax``) from the npm registry.
"""
