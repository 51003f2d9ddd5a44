"""Every pass the service runs, one folder each: `<type>/config.py` (pydantic only: what a client may send
and what the planner needs to know) and `<type>/run.py` (the work; torch and onnxruntime allowed).

This package is imported by both halves: the API imports the configs (through `passes.registry`), the
worker also the runs. Nothing outside a pass's folder names the pass: `passes.registry` discovers the
folders, and the job spec's union of pass configs is built from what it found.
"""
