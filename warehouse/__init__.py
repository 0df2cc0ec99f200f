"""fleetphysics: warehouse package."""
