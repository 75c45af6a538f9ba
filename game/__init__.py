"""The Pygame explorer: keys in, frames out, over the runtime's ZeroMQ protocol.

The game knows nothing of diffusion: it sends per-frame action rows (worldmodel/actions.py) and
shows the frames the runtime sends back. See docs/explorer.md.
"""
