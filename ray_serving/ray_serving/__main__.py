"""`python -m ray_serving`: the strategy described by ../strategy.toml, on Ray Serve."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from serving_common.strategy import strategy_folder

FOLDER = strategy_folder(__file__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def main() -> None:
    # This launch's folder: Ray's session, HAProxy's files, the metrics of every process
    # that counts requests (the replicas, and this one for requests HAProxy dropped).
    try:
        work = Path(tempfile.mkdtemp(prefix=f"{FOLDER.name}-"))
    except OSError as exc:
        print(f"{FOLDER.name}: fatal: temporary folder: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    # NOTE: before prometheus_client is imported (serving_common imports it), which picks
    # its multi-process mode once, at import.
    if MULTIPROC_ENV not in os.environ:
        (work / "metrics").mkdir()
        os.environ[MULTIPROC_ENV] = str(work / "metrics")
    from ray_serving.launcher import serve

    try:
        serve(FOLDER, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
