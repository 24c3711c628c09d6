"""Everything that trains ONE configuration. Knows nothing of Ray except trainable.py."""
