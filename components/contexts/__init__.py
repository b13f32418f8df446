"""Image contexts: text a large multimodal model writes about each image, which the model aligns with the tweet.

    settings.py       ContextsConfig: backend, prompt, generation parameters, cache location
    (images: components/common/images.py, shared with training and serving)
    cache.py          ContextCache: one atomic JSON record per (image bytes, generator, prompt, parameters)
    base.py           the ContextGenerator interface (prepare -> key -> generate)
    precomputed.py    contexts an LMM already wrote (BLIP-2, mPLUG-Owl files under data/contexts/)
    hf.py             a local Hugging Face image-text-to-text model
    openai_compat.py  an OpenAI-compatible chat-completions server (vLLM, TGI, Ollama)
    generate.py       generate_contexts: cache lookups, generation of the misses, the run report
    context_set.py    the published context-set file + manifest (coverage per split, content hash)
    steps.py          the steps `shapca contexts` and the generate-contexts flow run

Only the light reader is imported here; the rest stay in their modules so that importing the package is instant.
"""

from components.contexts.context_set import read_context_set

__all__ = ["read_context_set"]
