"""Training of the Spatia diffusion model (flow matching on accelerate; ``spatia train``).

* ``data.py``: training clips (procedural rooms, RGB-D folders, RealEstate10K-style folders), each
  with a scene projection rendered from a memory built from the clip's own geometry;
* ``latents.py``: encoding clips with the sampler's own encoders (cached in memory);
* ``flow.py``: the flow-matching objective (logit-normal sigma, history noise ``t_aug``, loss);
* ``trainer.py``: the accelerate loop (stage 1 control blocks, stage 2 LoRA), checkpoints, resume;
* ``cli.py``: the ``spatia train`` subcommand.

Heavy dependencies (torch, diffusers, accelerate) are imported by those modules, not here.
"""
