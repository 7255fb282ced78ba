"""Instructor commands (release, grade, feedback, export) on top of nbgrader's own CLI."""
