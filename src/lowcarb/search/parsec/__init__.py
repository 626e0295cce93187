"""PARSEC and Weightless PARSEC: probabilistic architecture search that holds one architecture at
a time, and a training-free variant.

    from lowcarb.search.parsec import ParsecConfig, cnn_space, parsec
    result = parsec.search(cnn_space(), load_data(DataConfig()), ParsecConfig())
    result.prior.save("prior.json")        # warm start: ParsecConfig(warm_start="prior.json")
    wl = weightless.search(cnn_space(), data, WeightlessConfig(score="naswot"))
"""

from lowcarb.search.parsec import parsec, scores, weightless
from lowcarb.search.parsec.parsec import ParsecConfig, ParsecResult
from lowcarb.search.parsec.prior import Prior
from lowcarb.search.parsec.retrain import Candidate, train_architecture
from lowcarb.search.parsec.space import (
    SPACES,
    Architecture,
    Built,
    CnnSpaceConfig,
    Decision,
    Space,
    TextSpaceConfig,
    arch_key,
    cnn_space,
    make_space,
    text_space,
)
from lowcarb.search.parsec.weightless import WeightlessConfig, compare_scores
from lowcarb.search.parsec.weights import WeightStore
from lowcarb.search.parsec.workflow import ParsecRunConfig, parsec_space, run_parsec

__all__ = [
    "SPACES",
    "Architecture",
    "Built",
    "Candidate",
    "CnnSpaceConfig",
    "Decision",
    "ParsecConfig",
    "ParsecResult",
    "ParsecRunConfig",
    "Prior",
    "Space",
    "TextSpaceConfig",
    "WeightStore",
    "WeightlessConfig",
    "arch_key",
    "cnn_space",
    "compare_scores",
    "make_space",
    "parsec",
    "parsec_space",
    "scores",
    "run_parsec",
    "text_space",
    "train_architecture",
    "weightless",
]
