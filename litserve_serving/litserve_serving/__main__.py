"""`python -m litserve_serving`: the strategy described by ../strategy.toml, on LitServe."""

import os
import shutil
import sys
import tempfile

from serving_common.strategy import strategy_folder

FOLDER = strategy_folder(__file__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def main() -> None:
    # NOTE: before prometheus_client is imported (serving_common imports it), which picks
    # its multi-process mode once, at import. LitServe always runs several processes (API
    # servers, inference workers): each writes its metrics there and every scrape sums them.
    created = None
    if MULTIPROC_ENV not in os.environ:
        try:
            created = tempfile.mkdtemp(prefix=f"{FOLDER.name}-prom-")
        except OSError as exc:
            print(f"{FOLDER.name}: fatal: temporary folder: {exc}", file=sys.stderr, flush=True)
            sys.exit(1)
        os.environ[MULTIPROC_ENV] = created
    from litserve_serving.launcher import serve

    try:
        serve(FOLDER)
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)


if __name__ == "__main__":
    main()
