"""A FastAPI app that pushes pgqueue tasks from its endpoints and runs their workers."""
