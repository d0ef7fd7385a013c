"""The six task recipes of the HarmoWAM paper, shipped with the package as `harmowam_recipes`."""
