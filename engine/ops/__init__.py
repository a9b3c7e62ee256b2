"""Operations: the Prometheus ``/metrics`` endpoint and the HTTP status and control API.

Both are served by :func:`serve_ops` beside a run, from the engine's Trio thread
(h11, no worker threads), and both read :class:`~engine._control.ControlState`, the
same state the Unix control socket's ``status`` reads. ``[metrics]`` and ``[api]``
are off by default and listen on 127.0.0.1; when both name the same host and port
they share one listener.
"""

from ._api import API_PREFIX as API_PREFIX
from ._api import api_routes as api_routes
from ._api import metrics_routes as metrics_routes
from ._http import serve_http as serve_http
from ._metrics import EngineCollector as EngineCollector
from ._metrics import exposition as exposition
from ._metrics import metric_names as metric_names
from ._metrics import metrics_registry as metrics_registry
from ._serve import OpsAddresses as OpsAddresses
from ._serve import api_token as api_token
from ._serve import serve_ops as serve_ops

__all__ = [
    "API_PREFIX",
    "EngineCollector",
    "OpsAddresses",
    "api_routes",
    "api_token",
    "exposition",
    "metric_names",
    "metrics_registry",
    "metrics_routes",
    "serve_http",
    "serve_ops",
]
