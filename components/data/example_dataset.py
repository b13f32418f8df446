"""The dataset a data loader reads: per example, (example, context, image), the triple the processor collates
(components/model/processor.py). Contexts and images are looked up by the example's image id; a missing one is None."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch.utils.data import Dataset

from components.data.records import Example


class ExampleDataset(Dataset):
    def __init__(self, examples: Sequence[Example], contexts: Mapping[str, str] | None = None, images=None):
        """`contexts`: image id -> the LMM's text about the image; `images`: anything with `.get(image_id)` that gives
        a PIL image or None (a dict, or `ImageFolder`, which reads the file only when asked)."""
        self.examples, self.contexts, self.images = list(examples), contexts, images

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple:
        example = self.examples[index]
        context = self.contexts.get(example.image_id) if self.contexts is not None else None
        image = self.images.get(example.image_id) if self.images is not None else None
        return example, context, image
