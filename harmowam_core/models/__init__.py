"""The HarmoWAM models: the world model (stage 1); the experts and the gate (stage 2)."""
