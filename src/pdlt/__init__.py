"""pdlt: The Principles of Deep Learning Theory (Roberts, Yaida & Hanin), as software.

Compute what the effective theory predicts for an MLP, measure the same statistics on ensembles
of real PyTorch networks, and compare the two.

>>> import pdlt, numpy as np
>>> net = pdlt.MLP(activation="tanh", depth=10, width=256, input_dim=3, C_W=1.0)
>>> x = np.eye(3)
>>> th = pdlt.kernel(net, x)                            # infinite-width K^(l)
>>> ms = pdlt.measure(net, x, n_networks=500, seed=0)   # the same, on 500 real networks
>>> pdlt.compare(th, ms).head()
"""

from pdlt.activations import Activation, activation
from pdlt.compare import agreement, compare
from pdlt.experiment.accuracy_map import AccuracyMap, accuracy_map
from pdlt.experiment.aspect_ratio import AspectRatioExperiment, aspect_ratio_experiment
from pdlt.experiment.bayes import PosteriorMeasurement, measure_posterior
from pdlt.experiment.dntk import EmpiricalDNTK, empirical_dntk
from pdlt.experiment.measure import Measurement, measure
from pdlt.experiment.ntk import empirical_ntk
from pdlt.experiment.sweep import sweep
from pdlt.experiment.train import TrainedEnsemble, train_ensemble, train_ensembles
from pdlt.experiment.trainability import Trainability, trainability
from pdlt.network import MLP
from pdlt.theory.bayes import BayesianPosterior, bayesian_posterior
from pdlt.theory.criticality import (
    critical_line,
    critical_point,
    criticality,
    phase_diagram,
    universality_class,
)
from pdlt.theory.ddntk import DDNTKStatistics, ddntk
from pdlt.theory.design import Recommendation, optimal_aspect_ratio, recommend
from pdlt.theory.dntk import DNTKStatistics, NTKCorrection, dntk, ntk_correction
from pdlt.theory.information import Information, information
from pdlt.theory.kernel import Kernel, kernel
from pdlt.theory.learning import (
    BiasVariance,
    NNGPRegressor,
    NTKRegressor,
    bias_variance,
    log_evidence,
)
from pdlt.theory.linear import deep_linear, deep_linear_moments
from pdlt.theory.ntk import NTK, NTKFluctuations, ntk, ntk_fluctuations
from pdlt.theory.ntk_criticality import learning_rates, ntk_criticality
from pdlt.theory.vertex import (
    FourPointVertex,
    KernelCorrection,
    Metric,
    four_point_vertex,
    kernel_correction,
    metric,
)

__all__ = [
    "DDNTKStatistics",
    "DNTKStatistics",
    "NTKCorrection",
    "ddntk",
    "dntk",
    "ntk_correction",
    "BayesianPosterior",
    "PosteriorMeasurement",
    "bayesian_posterior",
    "measure_posterior",
    "AccuracyMap",
    "accuracy_map",
    "AspectRatioExperiment",
    "aspect_ratio_experiment",
    "BiasVariance",
    "NNGPRegressor",
    "NTKRegressor",
    "TrainedEnsemble",
    "Trainability",
    "bias_variance",
    "log_evidence",
    "sweep",
    "train_ensemble",
    "train_ensembles",
    "trainability",
    "FourPointVertex",
    "KernelCorrection",
    "Metric",
    "deep_linear",
    "deep_linear_moments",
    "four_point_vertex",
    "kernel_correction",
    "metric",
    "MLP",
    "Activation",
    "EmpiricalDNTK",
    "Kernel",
    "Measurement",
    "NTK",
    "NTKFluctuations",
    "activation",
    "agreement",
    "compare",
    "critical_line",
    "critical_point",
    "optimal_aspect_ratio",
    "Recommendation",
    "recommend",
    "Information",
    "information",
    "criticality",
    "empirical_dntk",
    "empirical_ntk",
    "kernel",
    "learning_rates",
    "measure",
    "ntk",
    "ntk_criticality",
    "ntk_fluctuations",
    "phase_diagram",
    "universality_class",
]
__version__ = "0.1.0"

from pdlt import init  # noqa: E402, F401  (pdlt.init.critical_, torch.nn.init style)
