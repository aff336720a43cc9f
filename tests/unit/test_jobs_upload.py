"""Ingest's CreateJob stream read: the header first, and a file refused as soon as it passes the limit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from herald.domain import jobfiles
from herald.service_layer.errors import InvalidRequest
from herald.v1.jobs_pb2 import CreateJobChunk, JobHeader
from services.ingest.jobs_servicer import _read_upload

MIB = 1024 * 1024


def test_the_header_and_every_chunks_data_are_read() -> None:
    chunks = [CreateJobChunk(header=JobHeader(template_id="t"), data=b"phone number\n"), CreateJobChunk(data=b"07")]
    header, data = _read_upload(iter(chunks))
    assert (header.template_id, data) == ("t", b"phone number\n07")


def test_a_file_past_the_limit_is_refused_before_the_rest_is_read() -> None:
    read: list[int] = []

    def chunks() -> Iterator[CreateJobChunk]:
        yield CreateJobChunk(header=JobHeader(template_id="t"), data=b"x" * MIB)
        for n in range(jobfiles.MAX_FILE_BYTES // MIB + 10):
            read.append(n)
            yield CreateJobChunk(data=b"x" * MIB)

    with pytest.raises(InvalidRequest) as refused:
        _read_upload(chunks())
    assert refused.value.violations == [("data", jobfiles.FILE_TOO_LARGE)]
    assert len(read) == jobfiles.MAX_FILE_BYTES // MIB  # the chunk that passed it was the last one read


@pytest.mark.parametrize("first", [[], [CreateJobChunk(data=b"phone number\n")]])
def test_a_stream_without_its_header_first_is_refused(first: list[CreateJobChunk]) -> None:
    with pytest.raises(InvalidRequest) as refused:
        _read_upload(iter(first))
    assert refused.value.violations == [("header", "The first chunk must carry the job's header")]
