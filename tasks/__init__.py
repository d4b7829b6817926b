"""Task plugins: one module per benchmark, registered on import."""
