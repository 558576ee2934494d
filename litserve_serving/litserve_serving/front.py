"""The contract's share of each request in a LitServe API server process, in front of
LitServe's FastAPI app (LitServer's `middlewares`; server.py adds serving_common's error
handlers to the app itself).

LitServe owns `POST /predict` (its queue to the inference workers) and fixes `GET /` to a
plain-text "litserve running" with no option to move it; its health and info routes move
by option only. So serving_common's ContractFront answers the contract's `GET /`, `/info`
and `/metrics` itself, admits each prediction (503 instead of LitServe's unbounded queue)
and sends it to LitServe's `/predict`, where request.py reads its body within the contract's
limits; everything else goes to LitServe's app.
"""

from typing import Any

from serving_common.front import ContractFront
from starlette.types import ASGIApp

from litserve_serving.request import PREDICT_PATH


def contract_front(app: ASGIApp, **documents: Any) -> ContractFront:
    """Built in each API server process (Starlette builds its middleware stack on the first
    event, after LitServe forked the process); `documents`: ContractFront's health, info,
    settings and metrics, settled by the main process."""
    return ContractFront(app, app, PREDICT_PATH, **documents)
