"""The book's recursions, one module per family of equations."""
