"""Joint multimodal entity and relation extraction (mnre-joint, a stand-in for JMERE): entity spans and relation
triples of a sentence.

    records.py         Triple, JointExample       mnre_sentences.py  MNRE instances grouped into sentences
    task.py            JointTask (torch-free)     checks.py          its data checks
    head.py            JointHead: untyped entity CRF + an MLP pair classifier
"""

from components.tasks.joint.task import JointTask

__all__ = ["JointTask"]
