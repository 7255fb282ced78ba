import gc
import sys

from course_admin.paths import ROOT

# The course's own helper package comes first: an environment shared with another checkout
# (one COURSE_VENV for two) points its editable install at that checkout's optlab, and the
# folder the command runs from may hold none.
sys.path.insert(0, str(ROOT))

# Importing torch and nbgrader makes about a million objects that live as long as the
# command. Collecting while they are made only walks them again and again; frozen, they are
# left out of every later collection (and out of the last one, at exit).
gc.disable()
from course_admin.cli import main  # noqa: E402

gc.freeze()
gc.enable()

if __name__ == "__main__":
    code = main()
    gc.freeze()  # what grading made is kept until the end too: spare the last collection
    raise SystemExit(code)
