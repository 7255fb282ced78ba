"""nbgrader configuration of the course. Run nbgrader from this folder (./course does).

The course keeps nbgrader's course root here and the notebooks beside it: source/, release/
and solutions/ live one level up, in the repository root.
"""

import os
import sys
from pathlib import Path

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearHiddenTests,
    ClearMarkScheme,
    ClearOutput,
    IgnorePattern,
    IncludeHeaderFooter,
    LimitOutput,
    LockCells,
    SaveAutoGrades,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from course_admin.preprocessors import (  # noqa: E402
    HiddenCheckVerdicts,
    SandboxedExecute,
    SanitizeShownHTML,
    StripSolutionMarkers,
)

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

c.CourseDirectory.root = str(HERE)
c.CourseDirectory.course_id = "optimization-course"
c.CourseDirectory.source_directory = "../source"
c.CourseDirectory.release_directory = "../release"
c.CourseDirectory.solution_directory = "../solutions"
# SQLite by default; set COURSE_DB_URL (e.g. postgresql://user:pass@host/course) for a large class.
c.CourseDirectory.db_url = os.environ.get("COURSE_DB_URL", f"sqlite:///{HERE / 'gradebook.db'}")

c.IncludeHeaderFooter.header = str(HERE.parent / "source" / "header.ipynb")
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Solutions: the source with outputs, hidden tests and solution markers removed. Not executed,
# so that what is committed is exactly what generation gives.
c.GenerateSolution.preprocessors = [
    IncludeHeaderFooter,
    LockCells,
    ClearOutput,
    ClearMarkScheme,
    ClearHiddenTests,
    StripSolutionMarkers,
]

# Autograding: nbgrader's own pipeline, with the notebook run in a bubblewrap sandbox and
# each test cell's hidden check judged afterwards, outside it, and what the notebook shows made
# inert for the browser that opens it (course_admin/preprocessors.py).
# This holds for `nbgrader autograde` and the formgrader too, not only for ./course grade.
c.Autograde.autograde_preprocessors = [
    SandboxedExecute,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    HiddenCheckVerdicts,
    SanitizeShownHTML,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

# Submissions downloaded from an LMS into downloaded/<week>/archive/ (./course grade WEEK, or
# nbgrader zip_collect WEEK): the course's collector reads Blackboard and Canvas file names. For
# another LMS, set a regular expression with (?P<student_id>...) and (?P<file_id>...) groups; it
# is matched against each file's whole path, for example
# c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[^_/]+)__(?P<file_id>[^/]+)$"
c.ZipCollectApp.collector_plugin = "course_admin.lms.LmsFileNameCollector"

# Per-cell time limit. Hidden checks train small models for many steps; nbgrader's default of
# 30 s is too tight on a busy 1-core machine. COURSE_CELL_TIMEOUT_S overrides it.
c.Execute.timeout = int(os.environ.get("COURSE_CELL_TIMEOUT_S", "180"))
