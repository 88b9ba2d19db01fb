"""`apa serve --model M [--adapter A]`: the HTTP scoring service (apa.serve).

``POST /score`` (multipart: ``audio`` file, ``text``, optional ``task``) answers the JSON of
``apa score``; ``GET /health``; the OpenAPI schema at ``/openapi.json`` and docs at ``/docs``.
Requests are scored in batches of up to ``--max-batch``, gathered for at most
``--max-wait-ms``. Listens on 127.0.0.1 by default: put a reverse proxy with TLS and
authentication in front before exposing it.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from apa.commands.score import add_model_options
    from apa.inference.score import DEFAULT_DECODING, DEFAULT_TASK
    from apa.backbones import default_model
    from apa.tasks import TASKS

    parser.add_argument("--model", default=default_model(),
                        help=f"base model: a directory or hub id (default {default_model()})")
    parser.add_argument("--adapter", default=None, help="LoRA adapter directory saved by `apa train`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--task", default=DEFAULT_TASK, choices=list(TASKS),
                        help=f"task of requests that name none (default {DEFAULT_TASK})")
    parser.add_argument("--decoding", default=DEFAULT_DECODING, choices=["constrained", "free"],
                        help="decoding mode of every request (default constrained)")
    parser.add_argument("--max-batch", type=int, default=16, help="most requests per model batch (default 16)")
    parser.add_argument("--max-wait-ms", type=float, default=20.0,
                        help="longest wait for more requests to fill a batch (default 20 ms)")
    parser.add_argument("--max-upload-mb", type=float, default=10.0, help="largest audio upload (default 10 MiB)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="longest recording (default and most: the model's audio window, 30 s for "
                             "Qwen2-Audio)")
    parser.add_argument("--max-queue", type=int, default=256,
                        help="requests that may wait for the model before new ones get 503 (default 256)")
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
    from apa.errors import ApaError

    try:
        import uvicorn

        from apa.serve import create_app
    except ImportError as e:
        raise ApaError(f"the HTTP service needs FastAPI and uvicorn ({e}); install them with "
                       "pip install -e '.[serve]'") from None
    from apa.data.lexicon import read_lexicon
    from apa.inference.decoding import resolve_decoding
    from apa.backbones.loading import load_model_and_processor

    resolve_decoding(args.decoding)
    lexicon = read_lexicon(args.lexicon) if args.lexicon else None
    _check_port(args.host, args.port)
    model, processor = load_model_and_processor(args.model, adapter=args.adapter, dtype=args.dtype,
                                                device=args.device)
    name = str(args.model) + (f" + adapter {args.adapter}" if args.adapter else "")
    app = create_app(model, processor, model_name=name, task=args.task, decoding=args.decoding,
                     max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_upload_mb=args.max_upload_mb,
                     max_seconds=args.max_seconds, max_queue=args.max_queue, lexicon=lexicon,
                     threshold=args.threshold)
    print(f"serving {name} on http://{args.host}:{args.port} (POST /score, GET /health, docs at /docs)",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
