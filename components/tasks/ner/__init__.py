"""Multimodal named entity recognition (Twitter-2015, Twitter-2017): BIO tags per token.

records.py  NerExample            conll.py   the Twitter CoNLL reader
task.py     NerTask (torch-free)  checks.py  its data checks
head.py     NerHead: word states -> tag emissions -> linear-chain CRF
"""

from components.tasks.ner.task import NerTask

__all__ = ["NerTask"]
