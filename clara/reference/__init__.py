"""Apple's reference CLaRa checkpoints (github.com/apple/ml-clara) on clara.

`pth` reads PyTorch `.pth` files without torch and without running pickled code, `importer`
turns a reference checkpoint folder into a clara checkpoint, and `runtime` gives an imported
checkpoint the reference's vocabulary (its added special tokens and their embedding and output
rows) and document tokenization at run time.
"""
