"""Search over what the file sink wrote: `drain-receiver search`, `stats` and `ui`, on DuckDB."""
