"""pawprint: zoo package."""
