"""The worker's Celery app: the shared configuration (app.queue) plus this side's tasks.

Start one with: celery -A workers.celery_app worker -Q cpu --pool solo
"""

from app.queue import make_celery
from app.settings import get_settings

celery = make_celery(get_settings(), "squeeze-worker")
celery.conf.imports = ("workers.tasks",)
