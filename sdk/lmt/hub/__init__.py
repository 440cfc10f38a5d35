"""Publishing to the Hugging Face Hub: model cards (``lmt.hub.cards``), push and pull of runs (``lmt.hub.publish``)."""

from lmt.hub.publish import UploadPlan, check_repo_id, check_revision, pull, push_run

__all__ = ["UploadPlan", "check_repo_id", "check_revision", "pull", "push_run"]
