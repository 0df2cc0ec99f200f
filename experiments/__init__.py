"""fleetphysics: experiments package."""
