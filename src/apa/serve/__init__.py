"""The HTTP scoring service (``apa serve``): one idea a module.

- app.py: the FastAPI app and its routes (create_app);
- answers.py: every error answer, ``{"error", "code"}``, and the list of codes;
- gate.py: middleware in front of every route: keys, rate limit, drain, security headers,
  request metrics, the last 500;
- intake.py: a request's fields checked before it is queued (text, word and cost limits,
  upload), and the text of a model pronunciation;
- scheduler.py: lanes by cost, batches of similar cost, deadlines, departed clients, drain;
- access.py: optional API keys, per-key rate limit, limited wrong keys;
- metrics.py: /metrics in the Prometheus format;
- body_limit.py: 413 for request bodies over the upload limit;
- server.py: uvicorn with a read deadline for slow connections and a drain deadline;
- static/: the learner's page at ``GET /``.
"""

from apa.serve.app import create_app

__all__ = ["create_app"]
