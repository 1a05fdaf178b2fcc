"""`clara-index serve`: OpenAI's Files and Vector Stores API over clara's collections.

`app` (the routes and their settings), `cli` (options and start-up), `handler` (what the routes
do, on the one model worker), `protocol` (request and response models), `search` (vector store
search results), `state` (the registry of files, stores and their links), `uploads` (receiving
and keeping uploaded files). clara-serve mounts the same API (`app.mount_files_api`).
"""

#: The largest upload POST /v1/files takes unless told (`--max-upload-mb`, both servers)
MAX_UPLOAD_MB = 100.0
