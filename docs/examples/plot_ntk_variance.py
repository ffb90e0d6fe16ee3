"""
The NTK fluctuates at order ℓ/n
===============================

At infinite width the neural tangent kernel is frozen: every network of the ensemble has the
same NTK Θ⁽ℓ⁾ (book ch. 8). At finite width it fluctuates from network to network, and its
normalized variance grows like **ℓ/n** (book §8.3–8.4, §9.3): deep, narrow networks do not
stay in the kernel regime.

Lines: :func:`pdlt.ntk_fluctuations`, the coefficients A and B of the NTK's covariance
(for a single input, Cov(Ĥ_{ii}, Ĥ_{jj}) = A/n for i ≠ j and Var(Ĥ_{ij}) = B/n), divided by
Θ², for ReLU at criticality (C_W = 2). Points: the same measured on 1000 real networks at
widths 32 and 64 through their NTKs (:func:`pdlt.measure` with
``statistics=("ntk_fluctuations",)``), one-standard-error bars. The ensembles are small so
that the page builds in seconds.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch

import pdlt

torch.set_num_threads(1)

x = np.ones((1, 1))
n_networks = 1000

fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
for width, color in ((32, "C0"), (64, "C1")):
    net = pdlt.MLP("relu", depth=width // 4, width=width, input_dim=1, output_dim=2, C_W=2.0)
    theta = pdlt.ntk(net, x).Theta[:, 0, 0]
    fl = pdlt.ntk_fluctuations(net, x)
    ms = pdlt.measure(net, x, n_networks, seed=0, statistics=("ntk_fluctuations",), progress=False)
    ell_over_n = np.arange(1, net.depth + 1) / width
    norm = width * theta**2
    for ax, name in zip(axes, ("A", "B"), strict=True):
        theory = getattr(fl, name)[:, 0, 0, 0, 0] / norm
        measured = getattr(ms, name)[:, 0, 0, 0, 0] / norm
        error = getattr(ms, name + "_err")[:, 0, 0, 0, 0] / norm
        ax.plot(ell_over_n, theory, color=color, label=f"theory, n = {width}")
        ax.errorbar(
            ell_over_n,
            measured,
            error,
            fmt="o",
            ms=3,
            color=color,
            label=f"{n_networks} networks, n = {width}",
        )
axes[0].set(
    xlabel="ℓ / n", ylabel="coefficient / (n Θ⁽ℓ⁾²)", title="Cov(Ĥ_ii, Ĥ_jj) = A/n, over Θ²"
)
axes[1].set(xlabel="ℓ / n", title="Var(Ĥ_ij) = B/n, over Θ²")
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
# The two widths fall on one curve in ℓ/n, and that curve leaves the origin with the slope
# the theory predicts. The measurements bend above the leading-order line as ℓ/n grows:
# ReLU's fluctuations compound multiplicatively from layer to layer, so the O((ℓ/n)²)
# corrections the leading order neglects are large here: at ℓ/n ≈ 0.2 already a quarter to a
# third of the whole.
