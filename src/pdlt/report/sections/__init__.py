"""Report sections, one module per capability."""
