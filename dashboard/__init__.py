"""fleetphysics: dashboard package."""
