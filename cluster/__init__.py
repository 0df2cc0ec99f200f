"""fleetphysics: cluster package."""
