"""The metrics of uploads being indexed into vector stores: exported by `clara-index serve`
and by clara-serve with its Files API, whichever owns the `IndexService`."""

from __future__ import annotations

from clara_cli.metrics import Counter, Gauge, MetricSet


class FileMetrics(MetricSet):
    def __init__(self) -> None:
        self.files_in_progress = Gauge(
            "clara_files_in_progress",
            "Uploads being indexed into a vector store, or waiting to be (one per file and store)",
        )
        self.files_indexed = Counter(
            "clara_files_indexed_total",
            "Uploads whose indexing into a vector store ended (one per file and store), by "
            "status (completed, failed)",
            known=[{"status": "completed"}, {"status": "failed"}],
        )
        self.files_failed = Counter(
            "clara_files_failed_total",
            "Uploads whose indexing failed, by code: invalid_file and unsupported_file (the "
            "file's: its uploader's to fix), server_error (the server's: a full disk, a bug)",
            known=[{"code": c} for c in ("invalid_file", "unsupported_file", "server_error")],
        )
