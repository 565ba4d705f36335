"""``python -m metalearn_lib assignments list|release|grade``: hooked into :mod:`metalearn_lib.cli`."""

from __future__ import annotations

import argparse
import sys

from metalearn_lib.assignments import ASSIGNMENTS, get_assignment


def add_parser(sub) -> None:
    parser = sub.add_parser("assignments", help="classroom assignments: release student notebooks, grade them")
    commands = parser.add_subparsers(dest="assignments_command", required=True, parser_class=type(parser))
    commands.add_parser("list", help="list the assignments")
    rel = commands.add_parser("release", help="write the student notebooks (.md and .ipynb) to OUTDIR")
    rel.add_argument("outdir")
    rel.add_argument("--only", action="append", metavar="ID", help="release only this assignment (repeatable)")
    gr = commands.add_parser("grade", help="run a submitted notebook and its hidden tests; print feedback and JSON")
    gr.add_argument("notebook", help="the submission, .ipynb or MyST .md")
    gr.add_argument("--timeout", type=float, default=600, help="seconds for the whole notebook to run (default 600)")
    gr.add_argument("--test-timeout", type=float, default=300, help="seconds per hidden test (default 300)")
    gr.add_argument("--assignment", default=None, help="assignment id, when the notebook does not say")


def main(args: argparse.Namespace) -> int:
    if args.assignments_command == "list":
        for a in ASSIGNMENTS.values():
            print(f"{a.id:22s} {a.title}")
        return 0
    if args.assignments_command == "release":
        from metalearn_lib.assignments.release import release

        chosen = [get_assignment(i) for i in args.only] if args.only else None
        for path in release(args.outdir, chosen):
            print(path)
        return 0
    from metalearn_lib.assignments.grader import format_report, grade, json_line

    if args.timeout <= 0 or args.test_timeout <= 0:
        raise ValueError("--timeout and --test-timeout must be positive numbers of seconds")
    result = grade(args.notebook, timeout=args.timeout, test_timeout=args.test_timeout, assignment=args.assignment)
    print(format_report(result))
    sys.stdout.flush()
    print(json_line(result))
    return 0
