"""What the API does, independent of HTTP: uploads, model inspection, jobs, artifacts."""
