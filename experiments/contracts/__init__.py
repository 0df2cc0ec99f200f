"""Contracts between experiments and their consumers: data only, no runner code.

The warehouse and the dashboard may import these modules and nothing else of experiments/.
"""
