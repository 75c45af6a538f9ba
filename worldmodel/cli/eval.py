"""`magworld eval <action>`: evaluation, one module per action (each exposes `register(sub)`).

Add an action by writing `worldmodel/cli/eval_<name>.py` and listing it in ACTIONS.
"""

from worldmodel.cli.common import register_group

ACTIONS = [
    "worldmodel.cli.eval_curves",
    "worldmodel.cli.eval_autoencoder",
    "worldmodel.cli.eval_next_block",
    "worldmodel.cli.eval_memory",
    "worldmodel.cli.eval_rollout",
    "worldmodel.cli.eval_revisit",
    "worldmodel.cli.eval_turns",
    "worldmodel.cli.eval_history",
]


def register(sub):
    register_group(
        sub,
        "eval",
        help="evaluate runs and checkpoints (training curves, autoencoder reconstruction, ...)",
        description="magworld eval: evaluate training runs and checkpoints.",
        modules=ACTIONS,
    )
