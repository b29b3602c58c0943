"""SpatiaWorld: the generate-and-remember loop of Spatia.

Per clip of target poses:

1. render the memory into the poses (scene projection video + visibility + depth);
2. retrieve up to K reference frames from the frame bank by 3D IoU (Algorithm 1);
3. generate the clip, conditioned on the scene projection, the history frames (the last
   ``history_frames`` frames) and the references;
4. get depth for the generated frames (the backend's own, else the depth source) and a mask of
   dynamic pixels (the dynamics source); voxels the view shows count as observed, and static
   pixels the memory did not explain are fused as new geometry (where the memory covers a
   pixel it is authoritative);
5. add the frames to the frame bank and the history.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from .config import SpatiaConfig, WorldConfig
from .dynamics import DynamicsSource, make_dynamics
from .errors import InputError
from .generators import ConditionFrame, GenerationRequest, Generator, make_generator
from .geometry import Intrinsics, validate_poses
from .geometry_update import DepthSource, PoseCorrection, PoseRefiner, make_depth_source, make_pose_refiner
from .memory import SpatialMemory
from .render import SceneProjection, render_memory
from .retrieval import FrameBank, Reference, retrieve_references
from .worlds import WorldInit, load_world


@dataclass
class ClipResult:
    """One generated clip and what produced it."""

    poses: np.ndarray  # float64 (T, 4, 4)
    frames: np.ndarray  # uint8 (T, H, W, 3)
    scene_rgb: np.ndarray  # uint8 (T, H, W, 3) the scene projection
    scene_depth: np.ndarray  # float32 (T, H, W)
    visibility: np.ndarray  # bool (T, H, W)
    depth: np.ndarray  # float32 (T, H, W) depth fused into the memory
    references: list[Reference] = field(default_factory=list)
    frame_ids: list[int] = field(default_factory=list)  # bank ids of the new frames
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    dynamic: np.ndarray | None = None  # bool (T, H, W) pixels masked as dynamic (kept out of the memory)
    fused_poses: np.ndarray | None = None  # float64 (T, 4, 4) poses the frames were fused at (after refinement)
    corrections: list[PoseCorrection] = field(default_factory=list)  # pose refinement per frame


def make_intrinsics(cfg: SpatiaConfig) -> Intrinsics:
    """Output camera from ``cfg.camera``."""
    cam = cfg.camera
    if cam.intrinsics:
        return Intrinsics(*[float(v) for v in cam.intrinsics], width=cam.width, height=cam.height)
    return Intrinsics.from_fov(cam.fov_deg, cam.width, cam.height)


class SpatiaWorld:
    """The world simulator's core: memory, frame bank, generator and the loop between them."""

    def __init__(
        self,
        config: SpatiaConfig | None = None,
        generator: Generator | None = None,
        depth_source: DepthSource | None = None,
        dynamics: DynamicsSource | None = None,
        pose_refiner: PoseRefiner | None = None,
    ):
        self.config = config or SpatiaConfig()
        self.config.validate()
        self.device = torch.device(self.config.device)
        self.intrinsics = make_intrinsics(self.config)
        self.memory = self._new_memory()
        g = self.config.generator
        self.generator = generator or make_generator(
            g.backend, device=self.config.device, checkpoint=g.checkpoint,
            **{k: getattr(g, k) for k in ("steps", "guidance_scale", "shift", "control_scale", "negative_prompt", "dtype",
                                          "offload", "history_frames")})
        u = self.config.update
        self.depth_source = depth_source or make_depth_source(u, device=self.config.device)
        self.dynamics = dynamics if dynamics is not None else make_dynamics(u, device=self.config.device)
        self.pose_refiner = pose_refiner if pose_refiner is not None else make_pose_refiner(u, device=self.config.device)
        self._new_bank()
        self.init: WorldInit | None = None
        self.start_image: np.ndarray | None = None  # uint8 (H, W, 3): the image the world starts from
        self.pose: np.ndarray | None = None
        self.frames_generated = 0

    def _new_memory(self) -> SpatialMemory:
        m = self.config.memory
        return SpatialMemory(voxel_size=m.voxel_size, max_voxels=m.max_voxels, max_weight=m.max_weight,
                             min_depth=m.min_depth, max_depth=m.max_depth, block_size=m.block_size, device=self.device)

    def _new_bank(self) -> None:
        r = self.config.retrieval
        self.bank = FrameBank(voxel_size=r.voxel_size, max_frames=r.max_frames)
        self.history: deque[tuple[int, ConditionFrame]] = deque(maxlen=max(self.config.generator.history_frames, 1))

    # -- world -----------------------------------------------------------------------------
    def reset(self, world: WorldConfig | None = None) -> WorldInit:
        """Load a world (``config.world`` by default): memory, initial frames, start pose.

        On error the previous world is left untouched.
        """
        fresh = self._new_memory()
        init = load_world(world or self.config.world, fresh, self.intrinsics, depth_source=self.depth_source)
        self.memory = fresh
        self._new_bank()
        self.init = init
        self.pose = init.start_pose.copy()
        self.frames_generated = 0
        if self.dynamics is not None and hasattr(self.dynamics, "reset"):
            self.dynamics.reset()
        if init.frames:
            for f in init.frames:
                self._remember(f.rgb, f.depth, f.pose, f.intrinsics)
            self.start_image = init.frames[0].rgb
        else:  # the initial image of a memory-only world is its rendered start view
            scene = self.render(init.start_pose[None]).numpy()
            self._remember(scene["rgb"][0], np.where(scene["mask"][0], scene["depth"][0], 0), init.start_pose, self.intrinsics)
            self.start_image = scene["rgb"][0]
        return init

    def _remember(self, image, depth, pose, intrinsics: Intrinsics) -> int:
        ids = self.bank.view_voxels(depth, intrinsics, pose)
        frame_id = self.bank.add(image, pose, intrinsics, ids)
        self.history.append((frame_id, ConditionFrame(np.asarray(image), np.asarray(pose), intrinsics)))
        return frame_id

    # -- loop ------------------------------------------------------------------------------
    def _history_frames(self) -> list[ConditionFrame]:
        """The last ``generator.history_frames`` frames, oldest first."""
        n = self.config.generator.history_frames
        return [c for _, c in list(self.history)[-n:]] if n else []

    def render(self, poses) -> SceneProjection:
        """Scene projection of the memory into camera-to-world ``poses`` (T, 4, 4)."""
        r = self.config.render
        return render_memory(self.memory, self.intrinsics, poses, splat_scale=r.splat_scale, max_radius=r.max_radius,
                             near=r.near, compile=r.compile, kernel=r.kernel)

    def step_clip(self, poses, prompt: str | None = None, retrieve: bool | None = None, remember: bool = True,
                  on_generated: Callable[[ClipResult], None] | None = None) -> ClipResult:
        """Generate the frames at ``poses`` (steps 1-3 of the module docstring) and, if ``remember``,
        fuse them into the memory and the frame bank (steps 4-5).

        ``retrieve`` defaults to whether the generator uses reference frames. ``on_generated``, if
        given, receives the clip as soon as its frames exist, before the memory is updated from
        them (its ``depth`` is the rendered one, ``frame_ids`` empty; ``timings`` is the same dict,
        completed later): a simulator publishes there, so the update does not delay the frames.
        """
        if retrieve is None:
            retrieve = getattr(self.generator, "uses_references", True)
        if self.init is None:
            self.reset()
        poses = validate_poses(poses)
        timings = {}
        t0 = time.perf_counter()
        projection = self.render(poses)
        scene = projection.numpy()
        timings["render"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        references: list[Reference] = []
        if retrieve and self.config.retrieval.k > 0:
            targets = [self.bank.view_voxels(scene["depth"][i], self.intrinsics, poses[i]) for i in range(len(poses))]
            exclude = {fid for fid, _ in self.history}
            r = self.config.retrieval
            references = retrieve_references(self.bank, targets, k=r.k, epsilon=r.epsilon, exclude_frame_ids=exclude)
        timings["retrieve"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        g = self.config.generator
        request = GenerationRequest(
            poses=poses,
            intrinsics=self.intrinsics,
            scene_rgb=scene["rgb"],
            scene_depth=scene["depth"],
            visibility=scene["mask"],
            history=self._history_frames(),
            references=[
                ConditionFrame(self.bank.frames[ref.bank_index].image(), self.bank.frames[ref.bank_index].pose,
                               self.bank.frames[ref.bank_index].intrinsics)
                for ref in references
            ],
            prompt=g.prompt if prompt is None else prompt,
            seed=g.seed + self.frames_generated,
        )
        result = self.generator.generate(request)
        if result.frames.shape != scene["rgb"].shape or result.frames.dtype != np.uint8:
            raise InputError(
                f"generator {self.generator.name} returned frames {result.frames.shape} {result.frames.dtype}, "
                f"expected {scene['rgb'].shape} uint8"
            )
        timings["generate"] = time.perf_counter() - t0
        if on_generated is not None:
            on_generated(ClipResult(poses, result.frames, scene["rgb"], scene["depth"], scene["mask"], scene["depth"],
                                    references, [], timings))

        t0 = time.perf_counter()
        depth = result.depth if result.depth is not None else self.depth_source.estimate(
            result.frames, scene, poses, self.intrinsics, history=self._history_frames())
        timings["depth"] = time.perf_counter() - t0
        # Align to the memory first (the dynamics check compares frames at the poses they are fused at).
        t0 = time.perf_counter()
        fused_poses, corrections = poses, []
        if remember and self.pose_refiner is not None:
            fused_poses, corrections = self.pose_refiner.refine(result.frames, depth, poses, scene, self.intrinsics)
        timings["refine"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        dyn = (self.dynamics.masks(result.frames, scene, fused_poses, self.intrinsics, depth=depth)
               if self.dynamics is not None else None)
        timings["dynamics"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        frame_ids = []
        # The memory is authoritative where it covers a pixel: those voxels count as observed,
        # and only pixels it does not explain (and that are not dynamic) add geometry.
        observed = [projection.index[i] for i in range(len(poses))] if remember else []  # -1 (nothing) is skipped
        for i in range(len(poses) if remember else 0):
            exclude = scene["mask"][i] if dyn is None else scene["mask"][i] | dyn[i]
            self.memory.insert_frame(result.frames[i], depth[i], self.intrinsics, fused_poses[i],
                                     exclude_mask=exclude, observed=observed[i])
            frame_ids.append(self._remember(result.frames[i], depth[i], fused_poses[i], self.intrinsics))
        timings["fuse"] = time.perf_counter() - t0
        self.frames_generated += len(poses)
        self.pose = poses[-1].copy()
        return ClipResult(poses, result.frames, scene["rgb"], scene["depth"], scene["mask"], depth, references, frame_ids,
                          timings, dynamic=dyn, fused_poses=fused_poses, corrections=corrections)

    def run(self, poses, clip_frames: int | None = None, prompts: list[str] | None = None) -> Iterator[ClipResult]:
        """Generate along a whole trajectory, ``clip_frames`` poses per clip (a generator of clips)."""
        poses = validate_poses(poses)
        n = clip_frames or self.config.generator.clip_frames
        for c, start in enumerate(range(0, len(poses), n)):
            prompt = None if not prompts else prompts[min(c, len(prompts) - 1)]
            yield self.step_clip(poses[start : start + n], prompt=prompt, retrieve=True)
