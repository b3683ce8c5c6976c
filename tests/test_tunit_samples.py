"""TUNIT sample grids hold the sources, the references and the translations where they say."""

import torch

from ugatit_cli.families.tunit.networks import Generator, GuidingNet
from ugatit_cli.families.tunit.samples import domain_grid, reference_grid, to_uint8


def test_reference_and_domain_grids():
    torch.manual_seed(0)
    G, C = Generator(32, 8, nf=8).eval(), GuidingNet(3, 8).eval()
    src, ref = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(3, 3, 32, 32) * 2 - 1
    grid = reference_grid(G, C, src, ref)
    assert grid.shape == (3, 4 * 32, 3 * 32) and grid.dtype == torch.uint8
    assert torch.equal(grid[:, :32, 32:64], to_uint8(src[0]))
    assert torch.equal(grid[:, 64:96, :32], to_uint8(ref[1]))
    with torch.no_grad():
        expected = G(src[1:2], C(ref[2:3], sty=True))[0]
    assert (grid[:, 96:128, 64:96].int() - to_uint8(expected).int()).abs().max() <= 1
    styles = torch.randn(3, 8)
    grid = domain_grid(G, src, styles)
    assert grid.shape == (3, 4 * 32, 2 * 32)
    with torch.no_grad():
        expected = G(src[:1], styles[2:3])[0]
    assert (grid[:, 96:128, :32].int() - to_uint8(expected).int()).abs().max() <= 1
