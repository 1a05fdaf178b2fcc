import clara  # noqa: F401  # isort: skip  (first: preloads OpenBLAS before mlx loads)

# `clara-serve`: the OpenAI-compatible generation service over a CLaRa index.
# protocol.py (request/response models), engine.py (the RAG pipeline; its one MLX worker
# thread is clara_cli/worker.py), app.py (FastAPI app, routes, errors, auth), metrics.py, cli.py.
