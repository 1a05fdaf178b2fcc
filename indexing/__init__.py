"""indexing: document readers, chunking, and the durable on-disk index (`indexing.store`).

`indexing.store` (collections of documents, chunks and memory vectors; FAISS search) needs only
numpy, faiss and sqlite3, so services that only search never load mlx through it.
"""

import clara  # noqa: F401  (before anything imports mlx: preloads OpenBLAS on Linux)
