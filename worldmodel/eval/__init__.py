"""Evaluation: reconstruction metrics of the autoencoder, next-block prediction, rollouts, revisits."""
