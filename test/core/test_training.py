"""Training: flow matching, clip datasets, stage parameter sets, checkpoints, exact resume, the
``spatia train`` CLI, and a short learning check (scene-projection control must lower the loss).

Everything runs on tiny random models on the CPU (single-threaded torch: small ops are much
faster that way on a shared machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spatia_core.errors import InputError
from spatia_core.geometry import invert_pose
from spatia_core.training.data import ClipSpec, ProceduralClips, Re10kClips, RGBDFolderClips, build_clip
from spatia_core.training.flow import FlowConfig, flow_loss, make_flow_batch, sample_sigmas

SPEC = ClipSpec(num_history=1, num_target=5, num_references=1, width=64, height=64, voxel_size=0.05)


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # see test/conftest.py


# -- flow matching -------------------------------------------------------------------------
def test_flow_batch_mixes_noise_and_keeps_history_low_noise():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 2, 2, 2)
    hist = torch.randn(3, 4, 1, 2, 2)
    fb = make_flow_batch(x0, hist, FlowConfig(), generator=g)
    assert fb.hidden_states.shape == (3, 4, 3, 2, 2) and fb.timestep.shape == (3, 3) and fb.num_history == 1
    t_hist, t_tgt = fb.timestep[:, 0], fb.timestep[:, 1:]
    assert (t_hist >= 0).all() and (t_hist <= 50).all()
    assert torch.allclose(t_tgt, 1000 * fb.sigma[:, None].expand(3, 2))
    # x_t = (1 - s) x0 + s eps and v = eps - x0  =>  x0 = x_t - s v
    s = fb.sigma.view(-1, 1, 1, 1, 1)
    assert torch.allclose(fb.hidden_states[:, :, 1:] - s * fb.target, x0, atol=1e-5)
    # the history got at most 5 % noise
    assert (fb.hidden_states[:, :, :1] - hist).abs().max() < 0.05 * 6
    # the loss ignores the history frames
    pred = torch.cat([torch.full_like(hist, 1e3), fb.target], dim=2)
    assert flow_loss(pred, fb).item() == 0.0


def test_logit_normal_sigmas_and_shift():
    sig = sample_sigmas(20000, FlowConfig(), torch.Generator().manual_seed(1))
    assert 0 < sig.min() and sig.max() < 1 and abs(sig.median().item() - 0.5) < 0.02
    shifted = sample_sigmas(20000, FlowConfig(shift=5.0), torch.Generator().manual_seed(1))
    assert shifted.median() > 0.8  # shift 5 moves the mass to high noise, like the sampler
    with pytest.raises(InputError):
        FlowConfig(t_aug_max=2000)


# -- datasets ------------------------------------------------------------------------------
def test_procedural_clip_projection_matches_its_frames():
    ds = ProceduralClips(2, SPEC, seed=3, spacing=0.05, path_frames=20)
    clip = ds[1]
    assert clip.target.shape == (5, 64, 64, 3) and clip.history.shape == (1, 64, 64, 3)
    assert clip.references.shape == (1, 64, 64, 3) and clip.projection.shape == (6, 64, 64, 3)
    frames = np.concatenate([clip.history, clip.target]).astype(float)
    vis = clip.visibility
    assert vis.mean() > 0.5
    err_visible = np.abs(clip.projection.astype(float) - frames)[vis].mean()
    assert err_visible < 30, err_visible  # the memory shows the same room where it shows anything
    again = ProceduralClips(2, SPEC, seed=3, spacing=0.05, path_frames=20)[1]
    assert np.array_equal(again.projection, clip.projection)  # deterministic per index


def _write_re10k_folder(folder: Path, traj_file: Path, with_masks: bool) -> tuple[np.ndarray, np.ndarray]:
    """A RealEstate10K-style clip folder: procedural renders along a real RE10K camera path."""
    import cv2

    from spatia_core.geometry import Intrinsics
    from spatia_core.render import render_memory
    from spatia_core.trajectories import anchor, read_re10k
    from spatia_core.training.data import _room

    scene, memory = _room(5, 0.05)
    traj = read_re10k(traj_file)
    poses = anchor(traj.poses[:8], scene.start_pose, scale=1.0)
    k = Intrinsics.from_normalized(*traj.intrinsics[0], 64, 64)
    view = render_memory(memory, k, poses, compile=False).numpy()
    (folder / "frames").mkdir(parents=True)
    lines = ["https://example.invalid/video"]
    for i, (pose, rgb) in enumerate(zip(poses, view["rgb"])):
        stamp = int(traj.timestamps_us[i])
        cv2.imwrite(str(folder / "frames" / f"{stamp}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        w2c = invert_pose(pose)[:3].ravel()
        lines.append(" ".join(str(v) for v in [stamp, *traj.intrinsics[0], 0, 0, *w2c]))
    (folder / "cameras.txt").write_text("\n".join(lines) + "\n")
    (folder / "prompt.txt").write_text("a room with a sofa\n")
    if with_masks:
        (folder / "masks").mkdir()
        for i in range(len(poses)):
            cv2.imwrite(str(folder / "masks" / f"{i:03d}.png"), np.full((64, 64), 255, np.uint8))
    return poses, view["depth"]


def test_re10k_folder_with_depth_callable_and_dynamic_masks(tmp_path, data_dir):
    traj_file = sorted((data_dir / "re10k_trajectories").glob("*.txt"))[0]
    spec = ClipSpec(num_history=1, num_target=5, num_references=1, width=64, height=64, voxel_size=0.05)
    poses, depth = _write_re10k_folder(tmp_path / "clip", traj_file, with_masks=False)
    calls = []

    def depth_fn(frames, cams, k):
        calls.append(len(frames))
        assert np.allclose(cams, poses, atol=1e-6) and k.width == 64
        return depth

    ds = Re10kClips(tmp_path, spec, depth_source=depth_fn)  # a root folder of clip folders
    assert len(ds) == 8 - 6 + 1 and calls == [8]
    clip = ds[0]
    assert clip.prompt == "a room with a sofa" and clip.visibility.mean() > 0.5
    frames = np.concatenate([clip.history, clip.target]).astype(float)
    assert np.abs(clip.projection.astype(float) - frames)[clip.visibility].mean() < 30
    # every pixel dynamic: nothing may enter the memory, so the projection is empty
    _write_re10k_folder(tmp_path / "masked", traj_file, with_masks=True)
    masked = Re10kClips(tmp_path / "masked", spec, depth_source=depth_fn)[0]
    assert not masked.visibility.any()
    with pytest.raises(InputError):
        Re10kClips(tmp_path / "clip", spec)  # no depth/ and no depth source


def test_rgbd_folder_clips_on_real_data(data_dir):
    spec = ClipSpec(num_history=1, num_target=3, num_references=1, width=64, height=64, voxel_size=0.02,
                    drop_frame_prob=0.0, hole_prob=0.0)
    ds = RGBDFolderClips(data_dir / "rgbd_primesense_open3d", spec)
    assert len(ds) == 2
    clip = ds[0]
    assert clip.target.shape == (3, 64, 64, 3) and clip.visibility.mean() > 0.3
    with pytest.raises(InputError):
        build_clip(clip.target, np.zeros((2, 64, 64), np.float32), clip.poses[1:], clip.intrinsics, [0], [1], [],
                   spec, np.random.default_rng(0))


# -- training ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoded():
    """Tiny components with calibrated latent statistics, and encoded procedural clips."""
    from spatia_core.generators.spatia.tiny import tiny_components
    from spatia_core.training.latents import ClipEncoder, calibrate_latent_stats, encode_dataset

    comps = tiny_components(0)
    enc = ClipEncoder(comps["transformer"], comps["vae"], comps["text_encoder"], comps["tokenizer"], max_sequence_length=32)
    train_ds = ProceduralClips(48, SPEC, seed=0, spacing=0.05, path_frames=20, clips_per_path=4)
    val_ds = ProceduralClips(4, SPEC, seed=1, spacing=0.05, path_frames=20, clips_per_path=4)
    calibrate_latent_stats(enc, [train_ds[i] for i in range(8)])
    return {"comps": comps, "train": encode_dataset(train_ds, enc), "val": encode_dataset(val_ds, enc),
            "empty": enc.text("")}


def _trainer(encoded, tmp_path, **kw):
    from spatia_core.generators.spatia.tiny import tiny_transformer
    from spatia_core.training.trainer import TrainConfig, Trainer

    cfg = TrainConfig(**{"stage": 1, "steps": 4, "lr": 1e-3, "batch_size": 2, "output_dir": str(tmp_path),
                         "val_every": 0, "save_every": 0, "gradient_checkpointing": True, **kw})
    comps = encoded["comps"]
    others = {k: comps[k] for k in ("vae", "text_encoder", "tokenizer", "scheduler")}
    return Trainer(cfg, tiny_transformer(0), encoded["train"], encoded["val"], empty_text=encoded["empty"],
                   components=others)


def test_stage_parameter_sets(encoded, tmp_path):
    t1 = _trainer(encoded, tmp_path / "s1", stage=1)
    names = t1.trainable_names
    assert names and all(n.startswith(("vace_blocks.", "vace_patch_embedding.")) for n in names)
    all_control = [n for n, _ in t1.unwrapped.named_parameters() if n.startswith("vace_")]
    assert sorted(names) == sorted(all_control)
    t2 = _trainer(encoded, tmp_path / "s2", stage=2)
    names = t2.trainable_names
    assert names and all(n.startswith("blocks.") and (".lora_A." in n or ".lora_B." in n) for n in names)
    ranks = {p.shape[0] for n, p in t2.unwrapped.named_parameters() if ".lora_A." in n}
    assert ranks == {64}
    before = {n: p.detach().clone() for n, p in t2.unwrapped.named_parameters()}
    t2.train_step()
    changed = {n for n, p in t2.unwrapped.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(names)  # only LoRA weights move (B starts at 0, so A may not yet)


def test_checkpoint_layout_and_exact_resume(encoded, tmp_path):
    from spatia_core.generators.spatia.checkpoint import load_checkpoint

    full = _trainer(encoded, tmp_path / "full")
    straight = [full.train_step() for _ in range(4)]
    part = _trainer(encoded, tmp_path / "part")
    part.train_step(), part.train_step()
    state = part.save_state()
    resumed = _trainer(encoded, tmp_path / "part")
    resumed.load_state(state)
    assert resumed.step == 2
    tail = [resumed.train_step(), resumed.train_step()]
    assert np.allclose(tail, straight[2:], rtol=1e-5, atol=1e-7), (tail, straight)
    ckpt = resumed.save_checkpoint()
    for sub in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (ckpt / sub).is_dir(), sub
    meta = json.loads((ckpt / "spatia.json").read_text())
    assert meta["training"]["stage"] == 1 and meta["training"]["step"] == 4
    loaded = load_checkpoint(ckpt, components=("transformer",))["transformer"]
    ref = dict(resumed.unwrapped.named_parameters())
    assert all(torch.equal(p, ref[n]) for n, p in loaded.named_parameters())
    # stage 2 writes the adapter to lora/ and it loads back
    s2 = _trainer(encoded, tmp_path / "s2", stage=2, steps=1)
    s2.train_step()
    ck2 = s2.save_checkpoint()
    assert (ck2 / "lora" / "adapter_model.safetensors").is_file()
    comps = load_checkpoint(ck2, components=("transformer", "lora"))
    lora = {n: p for n, p in comps["transformer"].named_parameters() if ".lora_B." in n}
    ref2 = dict(s2.unwrapped.named_parameters())
    assert lora and all(torch.allclose(p, ref2[n]) for n, p in lora.items())


def test_control_lowers_validation_loss(encoded, tmp_path):
    """Short learning check: the same tiny model and steps, with and without scene projection."""
    finals = {}
    for control in (True, False):
        t = _trainer(encoded, tmp_path / str(control), stage=0, steps=300, lr=1e-3, batch_size=4,
                     use_control=control, text_dropout=0.0, gradient_checkpointing=False)
        for _ in range(300):
            t.train_step()
        finals[control] = t.validate()
    print(f"val loss with / without control: {finals[True]:.4f} / {finals[False]:.4f}")
    assert finals[True] < 0.93 * finals[False], finals


def test_spatia_train_cli_tiny(tmp_path):
    from spatia_core.cli import main

    cfg = tmp_path / "train.yaml"
    cfg.write_text("stage: 1\nsteps: 2\nhistory: 1\nframes: 5\nreferences: 1\nwidth: 64\nheight: 64\n"
                   "voxel_size: 0.05\ndata: [procedural:2]\nval_clips: 1\nval_every: 1\nsave_every: 1\n")
    out = tmp_path / "run"
    assert main(["train", "--tiny", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert (out / "final" / "spatia.json").is_file() and (out / "state" / "step-2" / "trainer.json").is_file()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("val_loss" in r for r in records)
    # resume at the end: nothing left to do, still exit 0
    assert main(["train", "--tiny", "--config", str(cfg), "--out", str(out), "--resume", "auto", "--no-progress"]) == 0
