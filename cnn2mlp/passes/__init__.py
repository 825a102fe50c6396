"""Graph rewrites, one pass a file, registered by name; and pass pipelines."""
from . import (  # noqa: F401  (importing a pass module registers the pass)
    avgpool_fuse,
    avgpool_linearize,
    clip_to_bounded_relu,
    clip_to_relu,
    conv_to_dense,
    drop_final_softmax,
    eliminate_dead,
    eliminate_identity,
    extract_input_affine,
    extremum_to_relu,
    fold_affine,
    fold_batchnorm,
    fold_pad,
    fold_stride,
    fuse_dense,
    layout_to_permutation,
    linearize_dag,
    lower_linear,
    maxpool_to_relu,
    prune_neurons,
    unify_activation,
)
from .base import PASSES, Pass, PassContext, PassOptions, get_pass, register_pass
from .pipeline import CORE_PIPELINE, Pipeline, PipelineReport

__all__ = ["PASSES", "Pass", "PassContext", "PassOptions", "get_pass", "register_pass", "Pipeline",
           "PipelineReport", "CORE_PIPELINE"]
