"""Data validation with Great Expectations: suites per dataset over the flattened records, a report and its table.

Importing this package does not import GX; opening the GX project (``open_gx_workspace``) does.
"""

from components.validation.data_docs import DataDocsLink, log_data_docs
from components.validation.report import ValidationReport, ValidationRow, render_report
from components.validation.runner import GxWorkspace, open_gx_workspace, validate_dataset, validate_examples

__all__ = [
    "DataDocsLink",
    "GxWorkspace",
    "ValidationReport",
    "ValidationRow",
    "log_data_docs",
    "open_gx_workspace",
    "render_report",
    "validate_dataset",
    "validate_examples",
]
