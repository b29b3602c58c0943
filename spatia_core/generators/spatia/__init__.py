"""The ``spatia`` diffusion backend: Wan2.2-TI2V-5B with 8 scene-projection control blocks.

* ``transformer.py``: :class:`SpatiaTransformer3DModel` (diffusers' Wan VACE transformer with
  per-frame timesteps, clean history latents and prepended reference latents);
* ``checkpoint.py``: our checkpoint layout (a local folder, safetensors only);
* ``convert/``: the official release files -> our layout, one module per model (``spatia convert``);
* ``pipeline.py``: the sampler (:class:`SpatiaPipeline`);
* ``generator.py``: :class:`SpatiaGenerator`, the world-loop backend.
"""


def __getattr__(name):  # keep ``import spatia_core.generators.spatia.transformer`` light
    if name == "SpatiaGenerator":
        from .generator import SpatiaGenerator

        return SpatiaGenerator
    raise AttributeError(name)
