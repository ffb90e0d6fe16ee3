"""
Trainability on digits: the 6·ξ_⊥ depth scale
=============================================

Schoenholz et al. (2016) trained deep tanh networks over a grid of C_W and depth and found
that a network trains only if it is shallower than a few times the depth scale ξ_⊥ over
which signal propagation forgets the inputs (book §5.1, §9.4); ξ_⊥ diverges at the
order–chaos boundary χ_⊥ = 1, so only near criticality can deep networks train.

Here :func:`pdlt.trainability` trains tanh MLPs (C_b = 0.05) on scikit-learn's bundled digits
(no download) and colours each cell by training accuracy; the white curve is the theory's
6·ξ_⊥ and the red line χ_⊥ = 1. **The grid is deliberately coarse** — 8 values of C_W × 4
depths, width 32, 2 networks per cell, 150 steps on 128 images — so that it builds in a few
seconds on two CPU cores; ``pdlt phase-diagram`` runs the full grid (96 cells, deeper
networks) on the resumable sweep engine.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch

import pdlt

torch.set_num_threads(1)

tr = pdlt.trainability(
    C_W=np.linspace(0.5, 4.0, 8),
    depth=[4, 8, 16, 32],
    store=None,  # keep the cells in memory; a folder makes the sweep resumable
    steps=150,
    n_train=128,
    width=32,
    n_networks=2,
    progress=False,
)
fig = tr.plot()
fig.axes[0].set_yticks(tr.depth)
plt.show()

# %%
# The per-cell table behind the figure:
print(tr.to_frame().round(3).head(12))
