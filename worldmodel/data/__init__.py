"""Data: the ViZDoom recorder, its exploration policies, the sharded dataset format, its validator,
the streaming PyTorch clip dataset and the revisit benchmark. `docs/dataset.md` is the format's spec."""
