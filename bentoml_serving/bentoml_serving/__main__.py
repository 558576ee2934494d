"""`python -m bentoml_serving`: the strategy described by ../strategy.toml, on BentoML."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from serving_common.strategy import strategy_folder

FOLDER = strategy_folder(__file__)


def main() -> None:
    # This start's own folder: BentoML's home (NOTE: BentoML empties the Prometheus folder
    # in it at every start, so two services sharing one would wipe each other's metrics)
    # and the file a worker that cannot start leaves its line in.
    try:
        scratch = Path(tempfile.mkdtemp(prefix=f"{FOLDER.name}-"))
    except OSError as exc:
        print(f"{FOLDER.name}: fatal: temporary folder: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    # Before BentoML is imported, which reads both once.
    os.environ.setdefault("BENTOML_HOME", str(scratch / "bentoml"))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")  # no usage reports
    from bentoml_serving.launcher import serve

    try:
        serve(FOLDER, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
