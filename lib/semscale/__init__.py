"""semscale: a reproducible study of semantic scale imbalance (Ma et al., ICLR 2023)."""

__version__ = "0.1.0"
