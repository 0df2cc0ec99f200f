"""fleetphysics: agents package."""
