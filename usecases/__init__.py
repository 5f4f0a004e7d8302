"""Use cases: one folder each, owned by its team (mlops.yaml, its own code, its tests); see README "Your own model"."""
