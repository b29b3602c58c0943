"""Convert the official Spatia release into our checkpoint layout (``spatia convert``).

The release (DiffSynth-Studio 1.1.9 naming) ships, one module here per model:

* :mod:`.dit`: the Wan2.2-TI2V-5B base DiT (three ``WanModel`` shards) and the control blocks (one
  ``VaceWanModel`` safetensors file) -> :class:`~..transformer.SpatiaTransformer3DModel`;
* :mod:`.vae`: ``Wan2.2_VAE.pth`` (original Wan names) -> diffusers ``AutoencoderKLWan``;
* :mod:`.umt5`: ``models_t5_umt5-xxl-enc-bf16.pth`` (DiffSynth ``WanTextEncoder`` names) ->
  transformers ``UMT5EncoderModel``;
* the LoRA: one safetensors file with ``pipe.dit.``-prefixed peft keys, mapped by :mod:`..lora`.

:mod:`.state_dicts` reads the files and checks each renamed state dict against its target model
(one :class:`~spatia_core.errors.FileFormatError` listing every missing, unexpected and mis-shaped
tensor); :mod:`.release` is the ``spatia convert`` command. Already-converted folders (``--vae``,
``--text-encoder``) are still accepted. The tokenizer cannot be derived from any release file:
``--tokenizer`` must be a local copy of ``google/umt5-xxl``'s tokenizer.

Importing this package loads no heavy library (torch and friends are imported where used).
"""

from .dit import (
    BASE_SHARDS,
    convert_diffsynth_state_dict,
    convert_release_transformer,
    diffsynth_to_diffusers_key,
    diffusers_to_diffsynth_key,
    expected_shapes,
)
from .release import add_arguments, run
from .state_dicts import check_state_dict, read_safetensors, read_torch_file
from .umt5 import (
    T5_FILE,
    build_umt5_encoder,
    convert_umt5_file,
    convert_umt5_state_dict,
    umt5_expected_shapes,
    umt5_key,
    umt5_xxl_config,
)
from .vae import (
    VAE_FILE,
    build_wan22_vae,
    convert_wan22_vae_file,
    convert_wan22_vae_state_dict,
    wan22_vae_config,
    wan22_vae_expected_shapes,
    wan22_vae_key,
)

__all__ = [
    "BASE_SHARDS",
    "T5_FILE",
    "VAE_FILE",
    "add_arguments",
    "build_umt5_encoder",
    "build_wan22_vae",
    "check_state_dict",
    "convert_diffsynth_state_dict",
    "convert_release_transformer",
    "convert_umt5_file",
    "convert_umt5_state_dict",
    "convert_wan22_vae_file",
    "convert_wan22_vae_state_dict",
    "diffsynth_to_diffusers_key",
    "diffusers_to_diffsynth_key",
    "expected_shapes",
    "read_safetensors",
    "read_torch_file",
    "run",
    "umt5_expected_shapes",
    "umt5_key",
    "umt5_xxl_config",
    "wan22_vae_config",
    "wan22_vae_expected_shapes",
    "wan22_vae_key",
]
