"""Data validation with Great Expectations: suites per dataset over the flattened records, a report and its table.

Importing this package does not import GX; building the context (``make_gx_context``) does.
"""

from components.validation.data_docs import DataDocsLink, log_data_docs
from components.validation.report import ValidationReport, ValidationRow, render_report
from components.validation.runner import GxContext, make_gx_context, validate_dataset, validate_examples

__all__ = [
    "DataDocsLink",
    "GxContext",
    "ValidationReport",
    "ValidationRow",
    "log_data_docs",
    "make_gx_context",
    "render_report",
    "validate_dataset",
    "validate_examples",
]
