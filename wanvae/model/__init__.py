"""The Wan VAEs (2.1 and 2.2): pure tensor kernels, the oneDNN routes, the layers, and the networks built from them over `coding`'s step contexts."""
