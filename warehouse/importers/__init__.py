"""Importers of recordings made outside fleetphysics: TR122 packs and nvidia-smi CSV logs."""
