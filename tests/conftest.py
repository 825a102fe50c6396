import os

from hypothesis import HealthCheck, settings

from cnn2mlp.tensorflow_env import prepare_tensorflow

prepare_tensorflow()  # before any test imports keras

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
