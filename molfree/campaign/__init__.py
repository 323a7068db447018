"""Batch campaigns: many jobs from one YAML file, run on Dask (local or SLURM/PBS), resumable.

``molfree campaign run|status|gather|report FILE``; see :mod:`molfree.campaign.spec` for the file
format, :mod:`.store` for the SQLite state, :mod:`.runner` for the Dask engine and :mod:`.report`
for the analysis and the HTML report.
"""
from .spec import JOB_TYPES, Campaign, JobSpec, load_campaign

__all__ = ["JOB_TYPES", "Campaign", "JobSpec", "load_campaign"]
