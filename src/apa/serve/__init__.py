"""The HTTP scoring service (``apa serve``): one idea a module.

- app.py: the FastAPI app, its routes and error answers (create_app);
- intake.py: a request's fields checked before it is queued (text, word limit, upload);
- scheduler.py: lanes by cost, batches of similar cost, deadlines, departed clients, drain;
- access.py: optional API keys and per-key rate limit;
- metrics.py: /metrics in the Prometheus format;
- body_limit.py: 413 for request bodies over the upload limit;
- server.py: uvicorn with a read deadline for slow connections and a drain deadline;
- static/: the learner's page at ``GET /``.
"""

from apa.serve.app import create_app

__all__ = ["create_app"]
