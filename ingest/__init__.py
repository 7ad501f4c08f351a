"""Turning files into chunks: format loaders, the chunker and the ingestion pipeline."""
