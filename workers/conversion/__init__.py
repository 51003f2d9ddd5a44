"""Converters between model representations that the pipeline uses when a pass needs the other form."""
