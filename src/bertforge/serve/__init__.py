"""`bertforge serve`: a model directory behind an HTTP API (FastAPI on uvicorn).

- `engine`: inference for each endpoint (the task's own predict, fill-mask, embeddings, attention);
- `batching`: micro-batching of requests that arrive together, on one model thread;
- `app`: routes, pydantic validation, limits, JSON errors, /healthz, /metrics, /attention;
- `server`: uvicorn with a graceful shutdown; `settings`: the options.

FastAPI, uvicorn and pydantic are an optional extra (`bertforge[serve]`); nothing here is
imported by `import bertforge`.
"""
