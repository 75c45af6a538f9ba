"""Training: a generic stage runner (`trainer.py`), its stages (registered in `stages.py`), and
what every stage shares: checkpoints, EMA, distributed helpers, metrics logging."""
