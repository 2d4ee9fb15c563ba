"""Workflows after ingestion (issue 21): the names both the compiler and the tasks service use.

The interface part below is shared with services/tasks; the rules of definitions follow it.
"""

from __future__ import annotations

from enum import StrEnum


class TaskKind(StrEnum):
    INGEST = "ingest"
    SQL = "sql"
    NOTIFY = "notify"


class TaskStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class EdgeOn(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    COMPLETION = "completion"


class When(StrEnum):
    ALL = "all"
    ANY = "any"


class WorkflowRunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# The error name of SendTaskFailure for a failed task.
WORKFLOW_TASK_ERROR = "WorkflowTaskFailed"
