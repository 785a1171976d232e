"""Prefect flows: what runs, in which order, with which parameters.

- :func:`flows.verify_crm_exports.verify_crm_exports`: CRM exports in, verified and gated CSVs out.
- :func:`flows.reverify_stale.reverify_stale`: re-check whatever is older than max_age_days (30 by default).
"""
