"""Training: the accelerate loop both stages share, and each stage's data and evaluation."""
