"""Model architectures mlx-lm does not ship, in mlx-lm's model-file layout (see clara.loader)."""
