"""`python -m kserve_serving`: the strategy described by ../strategy.toml, on KServe."""

from serving_common.serve import run_service
from serving_common.strategy import strategy_folder

if __name__ == "__main__":
    run_service(strategy_folder(__file__), app_factory="kserve_serving.app:kserve_app")
