"""Each kind of core error reaches an API caller with its own status code and its sentence."""

from __future__ import annotations

import pytest
from flask import Flask

from ace_api.rest.errors import ApiError, error_response
from ace_shared.errors import (
    AceError,
    BadOptionError,
    ClusterError,
    ConfigError,
    DiffFileError,
    ExceptionBusyError,
    FilterError,
    NodeSkippedError,
    NodeUnreachableError,
    NotFoundError,
    PermissionDeniedError,
    TableError,
)


@pytest.mark.parametrize(("error", "status"), [
    (BadOptionError("block_rows must be between 1000 and 100000; got 5."), 400),
    (ConfigError("The output folder /x cannot be written to."), 400),
    (FilterError("The table filter is not a valid WHERE clause."), 400),
    (TableError("Table public.t has no primary key."), 400),
    (DiffFileError("The diff file /x is not readable JSON."), 400),
    (NotFoundError("There is no task td_1."), 404),
    (ClusterError("The cluster file lab.json is malformed."), 404),
    (NodeSkippedError("Node n2 has no Spock exception tables."), 404),
    (PermissionDeniedError("Role alice may not read public.t."), 403),
    (ExceptionBusyError("The exception rows on node n1 are locked by another session."), 409),
    (NodeUnreachableError("n1", "connection refused"), 502),
    (ApiError("The task queue cannot be reached.", 503), 503),
])
def test_a_core_error_answers_with_its_status_and_sentence(error: AceError, status: int) -> None:
    with Flask(__name__).test_request_context("/ace/table-diff", method="POST"):
        response = error_response(error)
    assert response.status_code == status
    assert response.get_json() == {"error": str(error)}
