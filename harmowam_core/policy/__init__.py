"""The closed-loop HarmoWAM policy: routing between the predictive and the reactive expert."""
