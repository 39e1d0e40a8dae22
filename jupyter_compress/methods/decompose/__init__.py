"""Low-rank and tensor decompositions (importing this registers svd, tucker, cp and tt).

All decompositions run through tensorly inside ``tl.backend_context("pytorch")`` (its global backend
is never set) and tensorly is imported inside the functions only, so ``import jupyter_compress``
stays light. Analyses are cached per weight version (:mod:`.cache`), so re-ranking is a truncation.
"""

from .cache import cache_info, clear_cache, set_cache_limit
from .cp import CPConfig, CPConv2d
from .ranks import choose_rank
from .spectrum import LayerAnalysis, spectrum
from .svd import LowRankLinear, SVDConfig, linear_svd, randomized_linear_svd
from .tt import TTConfig
from .tt_modules import TTEmbedding, TTLinear
from .tucker import TuckerConfig, TuckerConv2d
from .vbmf import vbmf_rank

__all__ = [
    "SVDConfig", "TuckerConfig", "CPConfig", "TTConfig", "TTLinear", "TTEmbedding", "LowRankLinear",
    "TuckerConv2d", "CPConv2d", "LayerAnalysis",
    "spectrum", "choose_rank", "linear_svd", "randomized_linear_svd", "vbmf_rank",
    "cache_info", "clear_cache", "set_cache_limit",
]
