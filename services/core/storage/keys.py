"""Where Ferry keeps its files in object storage; every key is built here.

    {org}/exports/{job}/{filename}    an export's file
    {org}/imports/{job}/source        an upload, as it arrived
    {org}/imports/{job}/errors.csv    its error report
    {org}/uploads/{upload}/source     a direct upload, until an import takes it

A job's files share its prefix, so deleting the prefix deletes them all.
"""

from __future__ import annotations


def export_prefix(org_id: str, job_id: object) -> str:
    return f"{org_id}/exports/{job_id}/"


def export_file(org_id: str, job_id: object, filename: str) -> str:
    return export_prefix(org_id, job_id) + filename


def import_prefix(org_id: str, job_id: object) -> str:
    return f"{org_id}/imports/{job_id}/"


def import_source(org_id: str, job_id: object) -> str:
    return import_prefix(org_id, job_id) + "source"


def import_report(org_id: str, job_id: object) -> str:
    return import_prefix(org_id, job_id) + "errors.csv"


def upload_file(org_id: str, upload_id: object) -> str:
    return f"{org_id}/uploads/{upload_id}/source"
