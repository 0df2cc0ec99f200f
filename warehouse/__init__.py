"""The fleetphysics warehouse: DuckDB schema, ingest, importers, read-only queries."""

from warehouse.connection import connect_readonly, connect_writer, default_warehouse, readonly, writer
from warehouse.ingest import ingest_tables
from warehouse.query import query

__all__ = ["connect_readonly", "connect_writer", "default_warehouse", "readonly", "writer", "ingest_tables", "query"]
