"""Gymnasium environments over :class:`WorldSimulator` (no ROS). Importing registers ``SpatiaNav-v0``
(``gymnasium.make``) with its vector env (``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``)."""

from __future__ import annotations

import gymnasium

from .nav import SpatiaNavEnv
from .vector import SpatiaNavVectorEnv

__all__ = ["SpatiaNavEnv", "SpatiaNavVectorEnv"]

if "SpatiaNav-v0" not in gymnasium.registry:
    gymnasium.register(id="SpatiaNav-v0", entry_point="spatia_core.envs.nav:SpatiaNavEnv",
                       vector_entry_point="spatia_core.envs.vector:SpatiaNavVectorEnv")
