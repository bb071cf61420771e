"""A small order service: orders and their receipt tasks are written in one transaction."""
