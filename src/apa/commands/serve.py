"""`apa serve --model M [--adapter A]`: the HTTP scoring service (apa.serve).

``POST /score`` (multipart: ``audio`` file, ``text``, optional ``task``) answers the JSON of
``apa score``; ``GET /`` is the learner's page; ``GET /health``, ``GET /metrics``
(Prometheus), ``GET /speak`` (a model pronunciation by eSpeak NG), the OpenAPI schema at
``/openapi.json`` and docs at ``/docs``. Any backbone apa trains (Qwen2-Audio,
Qwen2.5-Omni, Phi-4-multimodal, Granite-Speech) is served the same way. Listens on
127.0.0.1 by default: put a reverse proxy with TLS in front before exposing it, and set
API keys (``--api-keys-file`` or ``$APA_API_KEYS``) when others can reach it.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from apa.commands.score import add_model_options
    from apa.inference.score import DEFAULT_DECODING, DEFAULT_TASK
    from apa.backbones import default_model
    from apa.serve.app import DEFAULT_DEADLINE_S, DEFAULT_SHORT_COST
    from apa.serve.intake import DEFAULT_MAX_COST, DEFAULT_MAX_WORDS
    from apa.serve.server import DEFAULT_DRAIN_S, DEFAULT_KEEP_ALIVE_S, DEFAULT_READ_TIMEOUT_S
    from apa.tasks import TASKS

    parser.add_argument("--model", default=default_model(),
                        help=f"base model: a directory or hub id (default {default_model()})")
    parser.add_argument("--adapter", default=None, help="LoRA adapter directory saved by `apa train`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--task", default=DEFAULT_TASK, choices=list(TASKS),
                        help=f"task of requests that name none (default {DEFAULT_TASK})")
    parser.add_argument("--decoding", default=DEFAULT_DECODING, choices=["constrained", "constrained-sequential", "free"],
                        help="decoding mode of every request (default constrained: parallel passes)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-batch", type=int, default=16, help="most requests per model batch (default 16)")
    limits.add_argument("--max-wait-ms", type=float, default=20.0,
                        help="longest wait for more requests to fill a batch (default 20 ms)")
    limits.add_argument("--max-upload-mb", type=float, default=10.0, help="largest audio upload (default 10 MiB)")
    limits.add_argument("--max-seconds", type=float, default=None,
                        help="longest recording (default and most: the model's audio window: 30 s for Qwen2-Audio, "
                             "300 s for Qwen2.5-Omni, 60 s for Phi-4-multimodal and Granite-Speech)")
    limits.add_argument("--max-words", type=int, default=DEFAULT_MAX_WORDS,
                        help=f"most words in one request's text (default {DEFAULT_MAX_WORDS}: 30 s of reading)")
    limits.add_argument("--max-cost", type=int, default=DEFAULT_MAX_COST,
                        help=f"most scores (sentence aspects, word aspects, phones) in one request: what it costs "
                             f"the model (default {DEFAULT_MAX_COST}: about 80 everyday words under multi)")
    limits.add_argument("--max-queue", type=int, default=256,
                        help="requests that may wait for the model before new ones get 503 (default 256)")
    limits.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE_S,
                        help=f"seconds after which a request gets 504 and its work stops (default "
                             f"{DEFAULT_DEADLINE_S:g})")
    limits.add_argument("--short-cost", type=int, default=DEFAULT_SHORT_COST,
                        help=f"requests with at most this many scores go to the short lane, which runs first "
                             f"(default {DEFAULT_SHORT_COST}: about 20 words under multi)")
    limits.add_argument("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT_S,
                        help=f"seconds a client has to send a whole request (default {DEFAULT_READ_TIMEOUT_S:g})")
    limits.add_argument("--keep-alive", type=float, default=DEFAULT_KEEP_ALIVE_S,
                        help=f"seconds an idle kept-alive connection stays open (default {DEFAULT_KEEP_ALIVE_S:g})")
    limits.add_argument("--drain", type=float, default=DEFAULT_DRAIN_S,
                        help=f"on SIGTERM, seconds running requests may finish in (default {DEFAULT_DRAIN_S:g})")
    access = parser.add_argument_group("access")
    access.add_argument("--api-keys-file", default=None, metavar="FILE",
                        help="require an API key: one KEY or NAME KEY per line (also: $APA_API_KEYS, comma-separated)")
    access.add_argument("--rate-limit", type=float, default=None, metavar="N",
                        help="at most N scoring and speaking requests a minute per key (per client address "
                             "without keys); N > 0; leave it out for no limit")
    access.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDRESS",
                        help="believe X-Forwarded-For from this reverse proxy's address (e.g. 127.0.0.1); "
                             "repeatable; by default the header is ignored and the peer's address counts")
    access.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="let pages from ORIGIN (e.g. https://app.example.org) call the API; repeatable")
    add_model_options(parser)


def _check_port(host: str, port: int) -> None:
    import socket

    from apa.errors import ApaError

    if not 0 < port < 65536:
        raise ApaError(f"--port must be 1-65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ApaError(f"cannot resolve --host {host}: {e.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as e:
            raise ApaError(f"cannot listen on {host}:{port}: {e.strerror}; choose another --port or --host") \
                from None


def run(args: argparse.Namespace) -> int:
    import logging

    from apa.errors import ApaError

    try:
        from apa.serve import create_app
        from apa.serve.server import make_server, protocol_with_deadline
    except ImportError as e:
        raise ApaError(f"the HTTP service needs FastAPI and uvicorn ({e}); install them with "
                       "pip install -e '.[serve]'") from None
    from apa.commands.score import model_lexicon
    from apa.distributed import resolve_device
    from apa.inference.decoding import resolve_decoding
    from apa.commands.engine import load_for_inference
    from apa.serve.access import RateLimiter, load_api_keys

    resolve_decoding(args.decoding)
    device = resolve_device(args.device)
    lexicon = model_lexicon(args)
    keys = load_api_keys(args.api_keys_file)
    protocol_with_deadline(args.read_timeout)  # a bad value fails before the model loads
    if args.rate_limit is not None:
        RateLimiter(args.rate_limit)  # --rate-limit 0 is an error, not a silent "off"
    for value, flag in [(args.drain, "--drain"), (args.keep_alive, "--keep-alive")]:
        if value < 0:
            raise ApaError(f"{flag} must be 0 or more, got {value}")
    _check_port(args.host, args.port)
    model, processor = load_for_inference(args, device)
    name = str(args.model) + (f" + adapter {args.adapter}" if args.adapter else "") + \
        (" on vLLM" if args.engine == "vllm" else "")
    app = create_app(model, processor, model_name=name, task=args.task, decoding=args.decoding,
                     max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_upload_mb=args.max_upload_mb,
                     max_seconds=args.max_seconds, max_queue=args.max_queue, lexicon=lexicon,
                     threshold=args.threshold, max_words=args.max_words, max_cost=args.max_cost,
                     deadline_s=args.deadline,
                     short_cost=args.short_cost, api_keys=keys, rate_limit=args.rate_limit,
                     cors_origins=args.cors_origin, guess=not args.no_guess)
    print(f"serving {name} on http://{args.host}:{args.port} (page at /, POST /score, GET /health, /metrics, "
          f"docs at /docs){'; API keys required' if keys else ''}", flush=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")  # uvicorn's layout
    make_server(app, args.host, args.port, read_timeout_s=args.read_timeout, drain_s=args.drain,
                keep_alive_s=args.keep_alive, trusted_proxies=args.trusted_proxy).run()
    return 0
