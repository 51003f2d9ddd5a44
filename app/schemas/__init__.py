"""Request and response models, the job spec and every pass config; shared by the API and the workers."""
