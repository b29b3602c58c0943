"""SpatiaTransformer3DModel: shapes, history / reference / control behaviour, full-size build."""

from __future__ import annotations

import pytest
import torch

from spatia_core.generators.spatia.transformer import (
    SPATIA_5B_CONFIG,
    SpatiaTransformer3DModel,
    tiny_config,
)

B, F, H, W = 2, 4, 6, 8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SpatiaTransformer3DModel(**tiny_config()).eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    cfg = tiny_config()
    x = torch.randn(B, cfg["in_channels"], F, H, W, generator=g)
    control = torch.randn(B, cfg["vace_in_channels"], F, H, W, generator=g)
    refs = torch.randn(B, cfg["in_channels"], 3, H, W, generator=g)
    text = torch.randn(B, 5, cfg["text_dim"], generator=g)
    t = torch.tensor([[0.0, 0.0, 600.0, 600.0], [0.0, 0.0, 250.0, 250.0]])
    return x, t, text, control, refs


def run(model, x, t, text, control=None, refs=None, **kw):
    with torch.no_grad():
        return model(x, t, text, control, refs, **kw).sample


def test_output_shape_and_reference_frames_removed(model, inputs):
    x, t, text, control, refs = inputs
    out = run(model, x, t, text, control, refs)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    plain = run(model, x, t, text, control)
    assert plain.shape == x.shape
    assert (out - plain).abs().max() > 1e-3  # references are attended to
    out_tuple = model(x, t, text, control, refs, return_dict=False)
    assert isinstance(out_tuple, tuple) and out_tuple[0].shape == x.shape


def test_batch_items_are_independent(model, inputs):
    x, t, text, control, refs = inputs
    both = run(model, x, t, text, control, refs)
    for i in range(B):
        one = run(model, x[i : i + 1], t[i : i + 1], text[i : i + 1], control[i : i + 1], refs[i : i + 1])
        assert torch.allclose(one, both[i : i + 1], atol=1e-5)


def test_control_none_vs_given_and_scale_zero(model, inputs):
    x, t, text, control, refs = inputs
    none = run(model, x, t, text, None, refs)
    given = run(model, x, t, text, control, refs)
    zero = run(model, x, t, text, control, refs, control_scale=0.0)
    half = run(model, x, t, text, control, refs, control_scale=0.5)
    assert (none - given).abs().max() > 1e-3
    assert torch.equal(zero, none)
    assert (half - given).abs().max() > 1e-4 and (half - none).abs().max() > 1e-4
    per_block = run(model, x, t, text, control, refs, control_scale=[1.0, 1.0])
    assert torch.allclose(per_block, given)


def test_hints_skip_reference_tokens(model, inputs):
    """Control hints only reach history/target tokens: with the control branch's output projection
    zeroed except for reference positions there is nothing to add, so output == no control."""
    x, t, text, control, refs = inputs
    m = SpatiaTransformer3DModel(**tiny_config()).eval()
    m.load_state_dict(model.state_dict())
    with torch.no_grad():
        for block in m.vace_blocks:
            block.proj_out.weight.zero_()
            block.proj_out.bias.zero_()
    assert torch.allclose(run(m, x, t, text, control, refs), run(m, x, t, text, None, refs), atol=1e-6)


def test_per_frame_timesteps(model, inputs):
    x, t, text, control, refs = inputs
    uniform = torch.tensor([600.0, 250.0])
    a = run(model, x, uniform, text, control, refs)
    b = run(model, x, uniform[:, None].expand(B, F), text, control, refs)
    assert torch.allclose(a, b)
    # history frames at t=0 change the prediction for the target frames too
    c = run(model, x, t, text, control, refs)
    assert (a[:, :, 2:] - c[:, :, 2:]).abs().max() > 1e-4
    with pytest.raises(ValueError):
        run(model, x, torch.zeros(B, F + 1), text)


def test_bad_inputs_raise(model, inputs):
    x, t, text, control, refs = inputs
    with pytest.raises(ValueError, match="control_hidden_states"):
        run(model, x, t, text, control[:, :, :2])
    with pytest.raises(ValueError, match="reference_latents"):
        run(model, x, t, text, None, refs[:, :, :, :4])
    with pytest.raises(ValueError, match="divisible"):
        run(model, x[..., :5, :], t, text)


def test_full_size_builds_on_meta_device():
    with torch.device("meta"):
        big = SpatiaTransformer3DModel(**SPATIA_5B_CONFIG)
    counts = big.num_parameters_by_part()
    assert 4.9e9 < counts["base"] < 5.1e9  # Wan2.2-TI2V-5B
    assert 1.3e9 < counts["control"] < 1.5e9  # 8 control blocks + 96-channel patch embedding
    assert len(big.blocks) == 30 and len(big.vace_blocks) == 8
    assert big.config.vace_layers == [0, 4, 8, 12, 16, 20, 24, 28]
    assert big.blocks[0].attn1.heads == 24 and big.proj_out.out_features == 48 * 4


def test_gradient_checkpointing_same_output_and_grad(model, inputs):
    x, t, text, control, refs = inputs
    m = SpatiaTransformer3DModel(**tiny_config()).train()
    m.load_state_dict(model.state_dict())

    def loss_and_grads():
        m.zero_grad()
        out = m(x, t, text, control, refs).sample
        loss = (out**2).mean()
        loss.backward()
        return out.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    out_a, grads_a = loss_and_grads()
    m.enable_gradient_checkpointing()
    assert m.gradient_checkpointing
    out_b, grads_b = loss_and_grads()
    assert torch.allclose(out_a, out_b, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and any(n.startswith("vace_blocks") for n in grads_a)
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-5), name
