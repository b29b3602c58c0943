"""A two-round rollout of our world loop against the release's own loop (``inference.py``), fp32.

Both sides run the same tiny random models (:func:`release_oracle.tiny_pair`: the release's
``WanModel`` / ``VaceWanModel`` / ``WanVideoVAE38`` / ``WanTextEncoder`` and ours with the same
weights through our converters), the same random LoRA (the release merges it from round 2 on;
ours switches a peft adapter), on the same test case (an image with depth, a 29-pose trajectory,
two prompt lines). Round lengths are the release's structure scaled down (first round 17 frames,
later rounds 21 frames holding the last 9, instead of 121 / 81) so the test runs in seconds.

Ours: :class:`SpatiaWorld` in the release layout (the spatia backend's default) with release
reference retrieval. The release: ``generate_video`` of its ``inference.py`` (see
:mod:`release_loop`), with what needs CUDA or other models substituted by what both sides share:
its per-round MapAnything point cloud by our memory's points (the memory is built from the
image's depth and does not change during the run: the depth source is ``rendered``), its
PyTorch3D renders by our renderer's scene projection and coverage at the same trajectory poses.

Compared: each round's final latents (as the release keeps them for its final decode), each
round's new frames, the references the release selects, LoRA use, seeds, prompts, and the final
video decoded from all rounds' latents.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from release_oracle import our_pipeline, release_pipeline, require_release, tiny_pair

TOL = 1e-4
W, H = 96, 64
N_POSES = 29  # 17 (the image + 16 new) + 12 new in round 2 (21 frames with the last 9 known)
PROMPTS = ["a bright modern living room with a wooden table", "the camera moves left slowly"]


def _trajectory(n: int) -> np.ndarray:
    """w2c (n, 4, 4): the camera slides right and forward and turns a little (OpenCV axes)."""
    out = []
    for i in range(n):
        a = 0.006 * i
        rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        c2w = np.eye(4)
        c2w[:3, :3] = rot
        c2w[:3, 3] = [0.01 * i, 0.002 * i, 0.01 * i]
        out.append(np.linalg.inv(c2w))
    return np.stack(out)


def _write_case(folder):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([120 + 80 * np.sin(xx / 7.0), 110 + 60 * np.cos(yy / 5.0), 90 + 50 * np.sin((xx + yy) / 9.0)], -1)
    image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(folder / "img.png")
    depth = (2.0 + 0.6 * np.sin(xx / 11.0) + 0.3 * (yy / H)).astype(np.float32)
    np.save(folder / "depth.npy", depth)
    (folder / "intrinsics.txt").write_text("[0.8 1.2 0.5 0.5]")
    (folder / "w2c.txt").write_text("".join(json.dumps(m[:3].tolist()) + "\n" for m in _trajectory(N_POSES)))
    (folder / "prompt.txt").write_text("\n".join(PROMPTS) + "\n")
    return folder


def _random_lora(dit, seed=5, rank=4):
    g = torch.Generator().manual_seed(seed)
    lora = {}
    for name, module in dit.blocks.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".", 1)[-1] in {
                "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "ffn.0", "ffn.2"}:
            lora[f"pipe.dit.blocks.{name}.lora_A.default.weight"] = torch.randn(rank, module.in_features, generator=g) * 0.2
            lora[f"pipe.dit.blocks.{name}.lora_B.default.weight"] = torch.randn(module.out_features, rank, generator=g) * 0.2
    return lora


@pytest.fixture(scope="module")
def rollout(tmp_path_factory):
    require_release()
    import open3d as o3d

    from release_loop import run_release_loop
    from spatia_core.config import SpatiaConfig
    from spatia_core.generators.spatia.generator import SpatiaGenerator
    from spatia_core.generators.spatia.lora import load_official_lora
    from spatia_core.generators.spatia.pipeline import SamplingDefaults
    from spatia_core.world import SpatiaWorld

    tmp = tmp_path_factory.mktemp("rollout")
    case = _write_case(tmp / "case")
    pair = tiny_pair(seed=3, workdir=tmp)
    lora = _random_lora(pair.release.dit)
    assert load_official_lora(pair.ours.transformer, lora) > 0  # a peft adapter, switched per round

    # ours
    pipe = our_pipeline(pair)
    pipe.defaults = SamplingDefaults(steps=3, first_clip_frames=17, later_clip_frames=21)
    generator = SpatiaGenerator(pipeline=pipe)
    cfg = SpatiaConfig().with_overrides({
        "world.source": "testcase", "world.path": str(case), "memory.voxel_size": 0.02, "render.compile": False,
        "generator.backend": "spatia",
    })
    world = SpatiaWorld(cfg, generator=generator)
    init = world.reset()
    assert world.layout == "release" and world.retrieval_method == "release"
    assert (world.intrinsics.width, world.intrinsics.height) == (W, H)
    from spatia_core.testcase import read_testcase

    tc = read_testcase(case)
    poses = init.map_from_source @ tc.poses
    scene = world.render(poses).numpy()  # the memory does not change during the run (checked below)
    version = world.memory.content_version
    source_from_map = np.linalg.inv(init.map_from_source)
    xyz = world.memory.xyz.numpy().astype(np.float64) @ source_from_map[:3, :3].T + source_from_map[:3, 3]
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    cloud.colors = o3d.utility.Vector3dVector(np.full_like(xyz, 0.5))
    o3d.io.write_point_cloud(str(tmp / "points.ply"), cloud)
    requests = []
    real_generate = generator.generate
    generator.generate = lambda request: requests.append(request) or real_generate(request)
    clips = list(world.run(poses, prompts=tc.prompts))
    del generator.generate
    assert world.memory.content_version == version
    ours = {"clips": clips, "latents": list(world.round_latents), "final": world.final_video(trim=False),
            "bank": world.bank, "generator": generator, "first_request": requests[0]}

    # the release
    def render(indices):
        score = np.repeat(scene["mask"][indices][..., None].astype(np.uint8) * 255, 3, axis=-1)
        return scene["rgb"][indices], score

    rpipe = release_pipeline(pair)
    rstate = {k[len("pipe.dit."):]: v for k, v in lora.items()}
    release = run_release_loop(rpipe, rstate, case, tmp / "release", tmp / "points.ply", render, [
        "--width", str(W), "--height", str(H), "--max_frames", str(N_POSES), "--first_round_frames", "17",
        "--round_frames", "21", "--hist_frames", "9", "--num_inference_steps", "3"])
    return ours, release


def test_two_rounds_have_the_release_structure(rollout):
    ours, release = rollout
    assert len(release.rounds) == len(ours["clips"]) == 2
    assert [r["num_frames"] for r in release.rounds] == [17, 21]
    assert [len(c.frames) for c in ours["clips"]] == [16, 12]
    assert [r["lora"] for r in release.rounds] == [False, True]
    assert {r["seed"] for r in release.rounds} == {20917}
    assert [r["prompt"] for r in release.rounds] == [p + " 4K, realistic, high quality, HDR." for p in PROMPTS]


def test_references_are_the_releases(rollout):
    ours, release = rollout
    assert len(release.rounds[0]["refs"]) == 0 and len(ours["clips"][0].references) == 0
    theirs = release.rounds[1]["refs"]
    mine = [ours["bank"].frames[r.bank_index].image() for r in ours["clips"][1].references]
    assert len(theirs) == len(mine) >= 1
    for a, b in zip(theirs, mine):
        assert np.array_equal(a, b)


def test_round_latents_and_frames_match_the_release(rollout):
    ours, release = rollout
    diffs, frames_equal = [], []
    for r, (theirs, clip, mine) in enumerate(zip(release.rounds, ours["clips"], ours["latents"])):
        drop = 0 if r == 0 else 3  # the release keeps round 1 whole and drops the 3 history latents later
        want = theirs["latents"][:, :, drop:]
        assert mine.shape == want.shape
        d = (mine.float() - want.float()).abs().max().item()
        diffs.append(d)
        assert d <= TOL, f"round {r + 1}: latents differ by {d:.2e}"
        known = 1 if r == 0 else 9
        new = theirs["video"][known:known + len(clip.frames)]
        assert new.shape == clip.frames.shape
        # uint8 frames (truncated as the release converts them): a latent difference of ~1e-5 can
        # move a value across an integer boundary
        assert np.abs(new.astype(int) - clip.frames.astype(int)).max() <= 1
        assert (new == clip.frames).mean() > 0.995
        frames_equal.append((new == clip.frames).mean())
    print("round latents max abs diff:", ", ".join(f"{d:.2e}" for d in diffs),
          "| frames bit-equal:", ", ".join(f"{f:.5f}" for f in frames_equal))


def test_final_video_matches_the_release(rollout):
    ours, release = rollout
    theirs, mine = release.final_video, ours["final"]
    assert theirs.shape == mine.shape == (17 + 12, H, W, 3)
    assert np.abs(theirs.astype(int) - mine.astype(int)).max() <= 1
    assert (theirs == mine).mean() > 0.995
    print(f"final video: {theirs.shape[0]} frames, bit-equal {(theirs == mine).mean():.5f}")


def test_a_wrong_mask_polarity_is_caught(rollout, monkeypatch):
    """The comparison is not vacuous: our old mask (visibility in [-1, 1], covered = +1) moves the
    first round's latents far beyond the tolerance."""
    ours, release = rollout
    pipe = ours["generator"].pipe
    request = ours["first_request"]

    def old_control(scene, score):
        vis = np.repeat(np.asarray(score, bool)[..., None].astype(np.uint8) * 255, 3, axis=-1)
        return torch.cat([pipe.encode_video(scene), pipe.encode_video(vis)], dim=1)

    monkeypatch.setattr(pipe, "encode_control", old_control)
    wrong = ours["generator"].generate(request).latents
    d = (wrong - release.rounds[0]["latents"]).abs().max().item()
    assert d > 100 * TOL, d
