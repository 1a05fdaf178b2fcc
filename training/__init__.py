"""CLaRa training: data readers, the three stages, the training loop, evaluation, CLIs."""

import clara  # noqa: F401  first: preloads OpenBLAS before anything imports mlx
