"""Adaptive fusion: closed gates leave the text alone, open gates add the attended sources, padding is invisible."""

from __future__ import annotations

import pytest
import torch

from components.model.fusion import AdaptiveFusion

torch.set_num_threads(2)
B, T, TC, P, D, DC, DV = 3, 5, 4, 6, 16, 12, 8


@pytest.fixture
def fusion() -> AdaptiveFusion:
    torch.manual_seed(0)
    return AdaptiveFusion(D, DC, DV, heads=4, dropout=0.1)


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, T, D, generator=g),
        torch.randn(B, TC, DC, generator=g),
        torch.ones(B, TC, dtype=torch.long),
        torch.randn(B, P, DV, generator=g),
    )


def test_closed_gates_leave_the_text_states_unchanged(fusion):
    text, context, context_mask, image = _inputs()
    nothing = torch.zeros(B, dtype=torch.bool)
    out = fusion.train()(text, context, context_mask, nothing, image, nothing)  # dropout on: still exact
    assert torch.equal(out.states, text)
    assert torch.equal(out.context_gate, torch.zeros(B, T)) and torch.equal(out.image_gate, torch.zeros(B, T))


def test_gates_are_per_token_and_per_sample(fusion):
    text, context, context_mask, image = _inputs()
    has_context = torch.tensor([True, False, True])
    has_image = torch.tensor([False, False, True])
    out = fusion.eval()(text, context, context_mask, has_context, image, has_image)
    assert torch.equal(out.states[1], text[1])  # neither source: untouched
    assert not torch.allclose(out.states[0], text[0]) and not torch.allclose(out.states[2], text[2])
    assert ((out.context_gate[0] > 0) & (out.context_gate[0] < 1)).all()
    assert out.context_gate[0].unique().numel() == T  # one gate per token, not one per sample
    assert torch.equal(out.image_gate[0], torch.zeros(T))
    # Sample 0 has only the context: its fused states are text + g^c a^c, whatever the image says.
    other_image = fusion(text, context, context_mask, has_context, image * 5, has_image)
    torch.testing.assert_close(other_image.states[0], out.states[0])


def test_padded_context_tokens_are_ignored(fusion):
    text, context, context_mask, image = _inputs()
    present = torch.ones(B, dtype=torch.bool)
    fusion.eval()
    out = fusion(text, context, context_mask, present, image, present)
    padded = torch.cat([context, torch.randn(B, 3, DC) * 100], dim=1)  # garbage behind the padding
    padded_mask = torch.cat([context_mask, torch.zeros(B, 3, dtype=torch.long)], dim=1)
    out_padded = fusion(text, padded, padded_mask, present, image, present)
    torch.testing.assert_close(out_padded.states, out.states, rtol=1e-5, atol=1e-5)


def test_gradients_reach_text_context_and_image(fusion):
    text, context, context_mask, image = _inputs()
    for tensor in (text, context, image):
        tensor.requires_grad_()
    present = torch.ones(B, dtype=torch.bool)
    out = fusion(text, context, context_mask, present, image, present)
    out.states.square().sum().backward()
    for tensor in (text, context, image):
        assert tensor.grad.abs().sum() > 0
    assert fusion.context.gate.weight.grad.abs().sum() > 0 and fusion.image.gate.weight.grad.abs().sum() > 0


def test_without_an_image_branch_only_the_context_is_read():
    fusion = AdaptiveFusion(D, DC, None, heads=2, dropout=0.0)
    text, context, context_mask, _ = _inputs()
    out = fusion(text, context, context_mask, torch.ones(B, dtype=torch.bool))
    assert out.image_gate is None and out.states.shape == (B, T, D)


def test_heads_must_divide_the_hidden_size():
    with pytest.raises(ValueError, match="fusion_heads = 5 must divide"):
        AdaptiveFusion(D, DC, None, heads=5, dropout=0.0)
