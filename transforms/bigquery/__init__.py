"""The warehouse: table schemas, rows, the MERGE, writes (Beam in production, a local sink), administration."""
