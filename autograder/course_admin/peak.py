"""``python -m course_admin.peak COMMAND ...``: run COMMAND, then report its peak memory.

The last line on stderr is ``course-peak-kb N``: the largest resident set, in KiB, of any
process COMMAND started and waited for (the notebook's kernel, when COMMAND is nbgrader).
"""

import resource
import subprocess
import sys

MARKER = "course-peak-kb"


def main() -> int:
    """Run the command given on the command line; return its exit code."""
    code = subprocess.call(sys.argv[1:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"{MARKER} {peak}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
