"""Multimodal relation extraction (MNRE): one relation per (head, tail) entity pair.

records.py  ReExample, NO_RELATION  mnre.py    the MNRE reader (Python-literal lines)
task.py     ReTask (torch-free)     checks.py  its data checks
head.py     ReHead: logits = W [h_<h>; h_<t>], the states at the entity markers
"""

from components.tasks.re.task import ReTask

__all__ = ["ReTask"]
