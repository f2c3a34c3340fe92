"""gRPC clients of the `recommend` ensemble: typed results, deadlines, retries, Kubernetes-ready channels.

    from sessionrec.clients import RecommendClient
    with RecommendClient("127.0.0.1:8001") as client:
        client.recommend([84051, 14513], k=20).item_ids
        client.click("guest-42", 14513, k=20)   # recommend_session: the server keeps the session

See client.py (sync), aio.py (asyncio), session.py (click: recommend_session), options.py (channel
and retry settings), errors.py.
"""

from sessionrec.clients.client import DEFAULT_TIMEOUT_S, Recommendation, RecommendClient
from sessionrec.clients.errors import (BadResponse, DeadlineExceeded, InvalidRequest, ModelNotReady, Overloaded,
                                       RecommendError, ServerUnavailable)
from sessionrec.clients.options import NO_RETRY, ChannelOptions, RetryPolicy

__all__ = [
    "RecommendClient", "Recommendation", "DEFAULT_TIMEOUT_S", "AsyncRecommendClient",
    "ChannelOptions", "RetryPolicy", "NO_RETRY",
    "RecommendError", "InvalidRequest", "ModelNotReady", "DeadlineExceeded", "ServerUnavailable", "Overloaded",
    "BadResponse", "SessionRecommendation",
]


def __getattr__(name: str):
    # Lazy: importing tritonclient.grpc.aio pulls in grpc.aio, which sync users (and gevent) do not need.
    if name == "SessionRecommendation":
        from sessionrec.clients.session import SessionRecommendation

        return SessionRecommendation
    if name == "AsyncRecommendClient":
        from sessionrec.clients.aio import AsyncRecommendClient

        return AsyncRecommendClient
    raise AttributeError(name)
