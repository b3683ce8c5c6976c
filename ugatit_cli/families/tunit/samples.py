"""Sample grids of a TUNIT model: how sources look in the style of references and of each pseudo-domain."""

from __future__ import annotations

import torch
from torch import nn


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats (... x 3 x H x W) to uint8 in [0, 255], rounded."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def reference_grid(G: nn.Module, C: nn.Module, sources: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """A uint8 3 x (R + 1) * H x (S + 1) * W grid: the first row holds the S sources (after a blank corner),
    the first column the R references, and cell (r, s) is ``G(source s, C.style(reference r))``."""
    n_src, _, h, w = sources.shape
    styles = C(references, sty=True)
    content = G.cnt_encoder(sources)
    rows = [torch.cat([torch.ones(1, 3, h, w, device=sources.device), sources])]
    for r in range(references.shape[0]):
        fake = G.decode(content, styles[r:r + 1].expand(n_src, -1))
        rows.append(torch.cat([references[r:r + 1], fake]))
    return _tile(rows)


@torch.no_grad()
def domain_grid(G: nn.Module, sources: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """A uint8 grid: the sources in the first row, then one row per pseudo-domain k: ``G(source,
    styles[k])`` (``styles``: K x sty_dim mean codes)."""
    content = G.cnt_encoder(sources)
    rows = [sources] + [G.decode(content, styles[k:k + 1].expand(sources.shape[0], -1).to(sources.device))
                        for k in range(styles.shape[0])]
    return _tile(rows)


def _tile(rows: list[torch.Tensor]) -> torch.Tensor:
    return to_uint8(torch.cat([torch.cat(list(row), dim=2) for row in rows], dim=1)).cpu()
