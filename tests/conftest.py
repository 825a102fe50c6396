import os

from hypothesis import HealthCheck, settings

from cnn2mlp.tensorflow_env import prepare_tensorflow

prepare_tensorflow()  # before any test imports keras

# A load without an engine builds the model's C code (seconds a model): the suite's many
# loads run on a Python engine instead, and the tests of the default choice
# (tests/test_default_engine.py) and of the c engine clear or name it themselves.
try:
    import numba  # noqa: F401
    os.environ.setdefault("CNN2MLP_ENGINE", "numba")
except ImportError:
    os.environ.setdefault("CNN2MLP_ENGINE", "scipy")

# CI has two cores and a time budget: a fixed, moderate number of examples per property,
# derandomized, so that a red CI means a regression and not an unlucky draw. Explore with
# HYPOTHESIS_PROFILE=dev (random examples) or thorough (random, ten times as many).
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
