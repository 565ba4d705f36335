"""Hidden tests, one file per assignment (read by the grader as text; see metalearn_lib.assignments.runner)."""
