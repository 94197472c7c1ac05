"""Drop-in at the edges, the concrete cases of the issue (the generic versions, over every
registered optimizer, are in test_generic.py)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import lrfree


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))


def _train(model, opt, n=3):
    torch.manual_seed(1)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    for _ in range(n):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def test_an_sgdlw_does_not_continue_as_adam_with_hypergradients():
    model = _net()
    src = lrfree.AdamHD(model.named_parameters(), lr=1e-3)
    _train(model, src)
    opt = lrfree.SGDLW(model.named_parameters())
    with pytest.raises(
        ValueError,
        match=r"^state_dict is from direction 'adam', rule 'hypergradient', blocks 'global'; "
        r"this optimizer is direction 'momentum', rule 'layerwise', blocks 'layer': loading it "
        r"would switch the algorithm$",
    ):
        opt.load_state_dict(src.state_dict())
    assert opt.param_groups[0]["direction"] == "momentum" and not opt.state


@pytest.mark.parametrize("name", ["Adam", "RMSprop"])
def test_torchs_older_float_step_format_loads_as_torch_loads_it(name):
    """A torch ``Adam`` / ``RMSprop`` state dict with ``step`` a Python float: torch and
    lrfree (same direction, constant rule) both load it and continue alike."""
    model = _net()
    ref = getattr(torch.optim, name)(model.parameters(), lr=1e-2, foreach=False)
    _train(model, ref)
    sd = copy.deepcopy(ref.state_dict())
    for st in sd["state"].values():
        st["step"] = float(st["step"])
    for g in sd["param_groups"]:
        del g["foreach"], g["maximize"]
    models = [copy.deepcopy(model), copy.deepcopy(model)]
    theirs = getattr(torch.optim, name)(models[0].parameters(), lr=1e-2, foreach=False)
    ours = lrfree.Composed(
        models[1].parameters(), direction=name.lower(), blocks="tensor", foreach=False
    )
    for opt in (theirs, ours):
        opt.load_state_dict(copy.deepcopy(sd))
        _train(models[0] if opt is theirs else models[1], opt)
    assert ours.param_groups[0]["lr"] == 1e-2 and ours.param_groups[0]["foreach"] is False
    for a, b in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # rounding


def test_torch_sgd_state_into_an_adam_is_refused():
    model = _net()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, sgd)
    opt = lrfree.Composed(model.parameters(), direction="adam", blocks="tensor")
    with pytest.raises(ValueError, match=r"holds \['dampening', 'momentum'\], which direction "):
        opt.load_state_dict(sgd.state_dict())


def test_unnamed_state_for_reordered_parameters_is_refused_by_shape():
    model = _net()
    opt = lrfree.Composed(model.parameters(), direction="adam", blocks="tensor")
    _train(model, opt)
    other = lrfree.Composed(list(model.parameters())[::-1], direction="adam", blocks="tensor")
    with pytest.raises(
        ValueError,
        match=r"state_dict's 'exp_avg' for parameter 'param0' \(param group 0, index 0\) has "
        r"shape \(6, 4\), the parameter \(2,\): the state is for other parameters",
    ):
        other.load_state_dict(opt.state_dict())
    assert not other.state


def test_adalip_group_with_a_momentum_key_is_refused():
    model = _net()
    with pytest.raises(
        TypeError,
        match=r"Unknown hyperparameter\(s\) \['momentum'\] in a param group for direction "
        r"'sgd' and rule 'lipschitz'; known: \[",
    ):
        # momentum=0: the plain 'sgd' direction, which has no momentum (the default 0.9 is
        # the 'momentum' direction, where the key is known)
        lrfree.AdaLip([{"params": list(model.named_parameters()), "momentum": 0.9}], momentum=0.0)
    sgdhd = lrfree.SGDHD(list(model[0].named_parameters(prefix="0")))
    with pytest.raises(TypeError, match=r"\['hypergrad_Lr'\]"):
        sgdhd.add_param_group(
            {"params": list(model[2].named_parameters(prefix="2")), "hypergrad_Lr": 1e-3}
        )
    # torch's scheduler keys are not hyperparameters but belong in a group
    sgdhd.add_param_group(
        {"params": list(model[2].named_parameters(prefix="2")), "initial_lr": 0.1}
    )
