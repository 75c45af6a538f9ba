"""magworld's PyTorch stack: autoencoder, causal DiT with a block KV memory, memory strategies,
samplers, training stages, data and evaluation."""

__version__ = "0.1.0"
