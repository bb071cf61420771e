"""``mypy --strict`` accepts the typed example and types ``push`` by the function's parameters:
a wrong, missing or unknown argument is a type error, and the envelope is not an argument."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parents[3]

MISUSES = textwrap.dedent(
    """
    from example.typed_tasks import Address, index_document, send_email, ship_parcel

    send_email.push(user_id="42")  # line 4
    send_email.push()  # line 5
    send_email.push(42, locale="fr")  # line 6
    ship_parcel.push(envelope=None, order_id=1, to=Address("a", "b"))  # line 7
    ship_parcel.configure(key="k").push_tx(None, "1", Address("a", "b"))  # line 8
    reveal_type(send_email.push)  # line 9
    index_document.push(1, ["a"])  # line 10: an unawaited coroutine
    send_email.configure(queue="x")  # line 11
    """
)


def run_mypy(*files: Path, cache: Path) -> tuple[str, int]:
    stdout, stderr, status = api.run(
        ["--strict", "--cache-dir", str(cache), "--no-error-summary", *map(str, files)]
    )
    return stdout + stderr, status


@pytest.mark.slow
def test_mypy_strict_accepts_the_typed_example_and_rejects_misuses(tmp_path: Path) -> None:
    output, status = run_mypy(ROOT / "example" / "typed_tasks.py", cache=tmp_path / "cache")
    assert status == 0, output

    misuses = tmp_path / "misuses.py"
    misuses.write_text(MISUSES)
    output, status = run_mypy(misuses, cache=tmp_path / "cache")
    assert status == 1
    errors: dict[int, str] = {}
    for line in output.splitlines():
        if not line.startswith(str(misuses)):
            continue
        if ": error: " in line or "Revealed type" in line:
            number = int(line.split(":")[1])
            errors[number] = errors.get(number, "") + line
    assert 'incompatible type "str"; expected "int"' in errors[4]
    assert 'Missing positional argument "user_id"' in errors[5]
    assert 'Unexpected keyword argument "locale"' in errors[6]
    assert 'Unexpected keyword argument "envelope"' in errors[7]
    assert 'incompatible type "str"; expected "int"' in errors[8]
    assert "def (user_id: int, template: str =) -> int | None" in (errors[9])
    assert "unused-coroutine" in errors[10] or "must be used" in errors[10]
    assert 'Unexpected keyword argument "queue"' in errors[11]
