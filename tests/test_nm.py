"""N:M semi-structured sparsity: exact structure of the masks."""

from __future__ import annotations

import pytest
import torch
from models import make

import jupyter_compress as jc
from jupyter_compress.methods import NMConfig
from jupyter_compress.methods.nm import nm_mask


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
def test_every_group_keeps_exactly_n_largest(n, m):
    model, x = make("mlp")
    small, report = jc.compress(model, NMConfig(n=n, m=m), example_inputs=x)
    for name in ("fc1", "fc2", "head"):
        w_old = model.get_submodule(name).weight.detach().reshape(-1, m)
        w_new = small.get_submodule(name).weight.detach().reshape(-1, m)
        assert ((w_new != 0).sum(dim=1) == n).all()
        # the kept entries are the n largest magnitudes of their group
        kth = w_old.abs().sort(dim=1, descending=True).values[:, n - 1 : n]
        assert (w_old.abs()[w_new != 0].reshape(-1, n) >= kth).all()
    assert all(r.detail["pattern"] == f"{n}:{m}" for r in report.compressed_rows)
    assert any("sparse tensor cores" in note and "no faster" in note for note in report.notes)


def test_conv_groups_run_along_flattened_inputs_and_odd_layers_are_skipped():
    model, x = make("cnn")
    small, report = jc.compress(model, NMConfig(n=2, m=4), example_inputs=x)
    skipped = {r.name: r.skipped for r in report.skipped_rows}
    assert "27 inputs per output are not a multiple of m=4" in skipped["stem.0"]  # 3 channels x 3 x 3
    w = small.block.conv1.weight.detach().reshape(16, -1, 4)
    assert ((w != 0).sum(dim=-1) == 2).all()


def test_ties_are_broken_by_position():
    mask = nm_mask(torch.ones(1, 8), 2, 4)
    assert mask.tolist() == [[True, True, False, False, True, True, False, False]]


def test_bad_n_m():
    with pytest.raises(jc.InvalidConfigError, match="must be smaller than 'm' \\(4\\). Got n=5"):
        NMConfig(n=5, m=4)
    with pytest.raises(jc.InvalidConfigError, match="The 'm' parameter of NMConfig must be an int in \\[2, 1024\\]. Got 1"):
        NMConfig(n=1, m=1)
