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

import dataclasses
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
from .geometry_update import (DepthSource, PoseCorrection, PoseRefiner, make_depth_source, make_pose_refiner,
                              resolve_depth_source)
from .memory import SpatialMemory
from .memory.spatial_memory import follow_remap
from .render import SceneProjection, render_memory
from .retrieval import FrameBank, Reference, retrieve_references
from .worlds import WorldInit, load_world, world_has_depth


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
    carved: int = 0  # voxels removed by free-space carving while fusing this clip (memory/support.py)


#: The output camera when neither ``config.camera`` nor the world defines one: width, height, horizontal FOV.
FALLBACK_CAMERA = (640, 480, 70.0)


def make_intrinsics(cfg: SpatiaConfig, world_camera: Intrinsics | None = None) -> Intrinsics:
    """Output camera from ``cfg.camera``, where it is left unset from ``world_camera`` (the
    world's own camera, :attr:`WorldInit.camera`), else :data:`FALLBACK_CAMERA`.

    In that order: ``camera.intrinsics`` (pixels at width x height); ``camera.fov_deg`` > 0;
    the world's camera, rescaled to ``camera.width`` x ``height`` where those are set (one of
    them alone keeps the world's aspect ratio); 70 degrees. A width or height of 0 is the
    world's (else 640 x 480).
    """
    cam = cfg.camera
    fw, fh, ffov = FALLBACK_CAMERA
    ref_w, ref_h = (world_camera.width, world_camera.height) if world_camera is not None else (fw, fh)
    w = cam.width or (round(cam.height * ref_w / ref_h) if cam.height else ref_w)
    h = cam.height or (round(cam.width * ref_h / ref_w) if cam.width else ref_h)
    if cam.intrinsics:
        return Intrinsics(*[float(v) for v in cam.intrinsics], width=w, height=h)
    if cam.fov_deg > 0 or world_camera is None:
        return Intrinsics.from_fov(cam.fov_deg or ffov, w, h)
    return world_camera if (w, h) == (ref_w, ref_h) else world_camera.resized(w, h)


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
        self.intrinsics = make_intrinsics(self.config)  # the output camera; a world's own camera replaces it at reset()
        self.memory = self._new_memory()
        g = self.config.generator
        self.generator = generator or make_generator(
            g.backend, device=self.config.device, checkpoint=g.checkpoint,
            **{k: getattr(g, k) for k in ("layout", "steps", "guidance_scale", "shift", "control_scale", "negative_prompt",
                                          "prompt_suffix", "dtype", "offload", "history_frames")})
        u = self.config.update
        self._depth_given = depth_source is not None
        self._depth_name = resolve_depth_source(u.depth, world_has_depth(self.config.world))
        self._mono: DepthSource | None = None  # the first image's depth where depth_source cannot give it
        self.depth_source = depth_source or self._make_depth(self._depth_name)
        self.dynamics = dynamics if dynamics is not None else make_dynamics(u, device=self.config.device)
        self.pose_refiner = pose_refiner if pose_refiner is not None else make_pose_refiner(u, device=self.config.device)
        self._new_bank()
        self.init: WorldInit | None = None
        self.start_image: np.ndarray | None = None  # uint8 (H, W, 3): the image the world starts from
        self.pose: np.ndarray | None = None
        self.frames_generated = 0
        self.clips_generated = 0
        self.round_latents: list = []  # each clip's latents for the final decode (release layout)

    def _new_memory(self) -> SpatialMemory:
        m = self.config.memory
        return SpatialMemory(voxel_size=m.voxel_size, max_voxels=m.max_voxels, max_weight=m.max_weight,
                             min_depth=m.min_depth, max_depth=m.max_depth, block_size=m.block_size, device=self.device)

    def _new_bank(self) -> None:
        r = self.config.retrieval
        # Release retrieval hands the frames back bit for bit (the release keeps them as images).
        self.bank = FrameBank(voxel_size=r.voxel_size, max_frames=r.max_frames, lossless=self.retrieval_method == "release")
        self.history: deque[tuple[int, ConditionFrame]] = deque(maxlen=max(self.config.generator.history_frames, 1))

    # -- world -----------------------------------------------------------------------------
    def reset(self, world: WorldConfig | None = None) -> WorldInit:
        """Load a world (``config.world`` by default): memory, initial frames, start pose.

        The output camera becomes the world's own where ``config.camera`` leaves it unset
        (:func:`make_intrinsics`). On error the previous world is left untouched.
        """
        wcfg = world or self.config.world
        has_depth = world_has_depth(wcfg)
        name, depth_source = self._depth_name, self.depth_source
        if not self._depth_given and resolve_depth_source(self.config.update.depth, has_depth) != name:  # auto
            name = resolve_depth_source(self.config.update.depth, has_depth)
            depth_source = self._make_depth(name)
        first_depth = depth_source if has_depth or hasattr(depth_source, "estimate_single") else self._mono_depth()
        fresh = self._new_memory()
        init = load_world(wcfg, fresh, make_intrinsics(self.config), depth_source=first_depth)
        self._depth_name, self.depth_source = name, depth_source
        self.intrinsics = make_intrinsics(self.config, init.camera)
        self.memory = fresh
        self._new_bank()
        self.init = init
        self.pose = init.start_pose.copy()
        self.frames_generated = 0
        self.clips_generated = 0
        self.round_latents = []
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

    def _make_depth(self, name: str) -> DepthSource:
        return make_depth_source(dataclasses.replace(self.config.update, depth=name), device=self.config.device)

    def _mono_depth(self) -> DepthSource:
        """The mono depth source (``update.depth_checkpoint``) for a first image without depth
        when ``update.depth`` gives no single-image depth (rendered, multiview)."""
        if self._mono is None:
            self._mono = self._make_depth("mono")
        return self._mono

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

    def render(self, poses, threads: int | None = None) -> SceneProjection:
        """Scene projection of the memory into camera-to-world ``poses`` (T, 4, 4); ``threads`` per
        view overrides ``render.threads``."""
        r = self.config.render
        return render_memory(self.memory, self.intrinsics, poses, splat_scale=r.splat_scale, max_radius=r.max_radius,
                             near=r.near, compile=r.compile, kernel=r.kernel,
                             threads=r.threads if threads is None else threads)

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

        history = self._history_frames()
        hist_scene = None
        if history and getattr(self.generator, "wants_history_projection", False):
            # The release's control video covers the clip's history poses too.
            hist_scene = self.render(np.stack([c.pose for c in history])).numpy()
        timings["render"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        references: list[Reference] = []
        if retrieve and self.config.retrieval.k > 0:
            if self.retrieval_method == "release":
                references = self._release_references(poses, history)
            else:
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
            history=history,
            references=[
                ConditionFrame(self.bank.frames[ref.bank_index].image(), self.bank.frames[ref.bank_index].pose,
                               self.bank.frames[ref.bank_index].intrinsics)
                for ref in references
            ],
            prompt=g.prompt if prompt is None else prompt,
            # The release seeds every round with the same seed.
            seed=g.seed if self.layout == "release" else g.seed + self.frames_generated,
            round_index=self.clips_generated,
            history_scene_rgb=None if hist_scene is None else hist_scene["rgb"],
            history_visibility=None if hist_scene is None else hist_scene["mask"],
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
        frame_ids, carved = [], 0
        # The memory is authoritative where it covers a pixel: those voxels count as observed,
        # and only pixels it does not explain (and that are not dynamic) add geometry.
        # Where the new depth sees through a voxel (free space), that voxel loses an observation instead
        # (memory/support.py); rendered and fused at the same pose only (not after a pose correction).
        observed = [projection.index[i] for i in range(len(poses))] if remember else []  # -1 (nothing) is skipped
        u = self.config.update
        source = self.generator if result.depth is not None else self.depth_source
        may_carve = u.carve and not getattr(source, "depth_is_memory", False)  # the memory's own depth: nothing to see through
        for i in range(len(poses) if remember else 0):
            exclude = scene["mask"][i] if dyn is None else scene["mask"][i] | dyn[i]
            carve = may_carve and np.array_equal(fused_poses[i], poses[i])
            fused = self.memory.insert_frame(result.frames[i], depth[i], self.intrinsics, fused_poses[i],
                                             exclude_mask=exclude, observed=observed[i],
                                             rendered_depth=projection.depth[i] if carve else None,
                                             carve_exempt=None if dyn is None else dyn[i], free_tol=u.free_space_tol)
            carved += fused.voxels_removed
            if fused.remap is not None:  # voxels moved (carved, evicted): the later views' index maps follow
                for j in range(i + 1, len(poses)):
                    observed[j] = follow_remap(observed[j], fused.remap)
            frame_ids.append(self._remember(result.frames[i], depth[i], fused_poses[i], self.intrinsics))
        timings["fuse"] = time.perf_counter() - t0
        self.frames_generated += len(poses)
        self.clips_generated += 1
        if result.latents is not None:
            self.round_latents.append(result.latents)
        self.pose = poses[-1].copy()
        return ClipResult(poses, result.frames, scene["rgb"], scene["depth"], scene["mask"], depth, references, frame_ids,
                          timings, dynamic=dyn, fused_poses=fused_poses, corrections=corrections, carved=carved)

    # -- layout and retrieval ----------------------------------------------------------------
    @property
    def layout(self) -> str:
        """``release`` when the generator runs the release's rounds (the spatia backend's default), else ``stream``."""
        if getattr(self.generator, "layout", None) == "release" and hasattr(self.generator, "new_frames_per_round"):
            return "release"
        return "stream"

    @property
    def retrieval_method(self) -> str:
        """``release`` or ``iou`` (``retrieval.method: auto`` follows the layout)."""
        method = self.config.retrieval.method
        if method == "auto":
            return "release" if self.layout == "release" else "iou"
        return method

    def _release_references(self, poses: np.ndarray, history: list[ConditionFrame]) -> list[Reference]:
        """The release's reference selection (``inference.py`` ``select_reference_frames``).

        Candidates: every ``history_stride``-th frame of the bank before the clip's history;
        targets: every ``target_stride``-th pose of the round (its history poses first, padded to
        the round's length with the last pose); both matched on the memory's points that each
        camera sees front-most, one-to-one (Hungarian), up to K. The memory stands in for the
        release's per-round MapAnything point cloud.
        """
        from .retrieval_release import select_references_release

        if self.layout == "release" and self.clips_generated == 0:
            return []  # the release's first round has no references
        r = self.config.retrieval
        known = (self.generator.known_frames(history, self.clips_generated)
                 if hasattr(self.generator, "known_frames") else history)
        hist_ids = {fid for fid, _ in self.history}
        pool = [i for i, f in enumerate(self.bank.frames) if f.frame_id not in hist_ids][:: r.history_stride]
        if not pool or len(self.memory) == 0:
            return []
        clip = [c.pose for c in known] + list(poses)
        total = len(clip)
        if self.layout == "release":
            total = max(total, self.generator.later_clip_frames)
        clip = np.stack(clip + [clip[-1]] * (total - len(clip)))[:: r.target_stride]
        points = self.memory.xyz.detach().cpu().numpy()
        cams = np.stack([self.bank.frames[i].pose for i in pool])
        picks = select_references_release(points, cams, clip, self.intrinsics, self.intrinsics.height,
                                          self.intrinsics.width, k=r.k)
        return [Reference(pool[j], self.bank.frames[pool[j]].frame_id, float(count), -1) for j, count in picks]

    def final_video(self, trim: bool = True) -> np.ndarray | None:
        """The release's final video (all rounds' latents decoded at once, the start image first), or
        None when the generator keeps no latents (the projection backend).

        The release keeps the last round's padding (its last pose repeated up to 81 frames);
        ``trim`` cuts the video to the start image plus the frames generated.
        """
        if not self.round_latents or not hasattr(self.generator, "decode_video"):
            return None
        video = self.generator.decode_video(self.round_latents)
        return video[: 1 + self.frames_generated] if trim else video

    def run(self, poses, clip_frames: int | None = None, prompts: list[str] | None = None) -> Iterator[ClipResult]:
        """Generate along a whole trajectory (a generator of clips), one prompt line per clip.

        Stream layout: ``clip_frames`` poses per clip. Release layout: the release's rounds, 120
        new frames and then 72 per round; a trajectory that starts at the world's start pose
        (a test case's ``w2c.txt`` does) has the start image as its frame 0, so that pose is not
        generated again.
        """
        poses = validate_poses(poses)
        if self.layout == "release":
            if self.init is None:
                self.reset()
            if self.clips_generated == 0 and len(poses) and np.allclose(poses[0], self.pose, atol=1e-6):
                poses = poses[1:]
            chunks, start = [], 0
            while start < len(poses):
                n = self.generator.new_frames_per_round(self.clips_generated + len(chunks))
                chunks.append((start, start + n))
                start += n
        else:
            n = clip_frames or self.config.generator.clip_frames
            chunks = [(start, start + n) for start in range(0, len(poses), n)]
        for c, (start, end) in enumerate(chunks):
            prompt = None if not prompts else prompts[min(c, len(prompts) - 1)]
            yield self.step_clip(poses[start:end], prompt=prompt, retrieve=True)
