"""`local.env` and each person's credentials file: written once by `write_env_file`, read back
by `read_env_file` exactly, and valid shell (`set -a; . .sourceflow/local.env`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ops.config import OperatorError, read_env_file, write_env_file

# What the stack writes has spaces (libpq DSNs), `=`, and may have any other character a shell
# treats specially.
VALUES = {
    "DATABASE_URL": "user=postgres dbname=postgres host=/tmp/x/pgdata password=Ab-9_z",
    "PARTNER_DB_DSN": "host=/tmp/x dbname=partner user=partner_reader",
    "QUOTES": 'it\'s "quoted" and $HOME `date` \\n; & | * ~',
    "EMPTY": "",
    "URL": "http://127.0.0.1:4566",
}


def test_what_is_written_is_read_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "local.env"
    write_env_file(path, VALUES)
    assert read_env_file(path) == VALUES
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_shell_that_sources_it_gets_the_same_values(tmp_path: Path) -> None:
    # Given the file, When a POSIX shell sources it with `set -a` and prints its environment
    path = tmp_path / "local.env"
    write_env_file(path, VALUES)
    script = f"set -a; . {path}; " + "; ".join(f'printf "%s\\0" "${key}"' for key in VALUES)
    printed = subprocess.run(["sh", "-c", script], capture_output=True, check=True).stdout
    # Then each variable holds exactly the value written
    assert printed.decode().split("\0")[:-1] == list(VALUES.values())


def test_a_file_written_by_hand_reads_as_the_shell_would(tmp_path: Path) -> None:
    path = tmp_path / "local.env"
    path.write_text("# a comment\nexport A=1\nB='two words'\nC=plain # trailing\n")
    assert read_env_file(path) == {"A": "1", "B": "two words", "C": "plain"}


def test_an_unterminated_quote_is_named_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "local.env"
    path.write_text("A='open\n")
    with pytest.raises(OperatorError, match=r"local\.env: No closing quotation"):
        read_env_file(path)


def test_a_name_a_shell_cannot_take_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a shell variable name"):
        write_env_file(tmp_path / "x.env", {"NOT-A-NAME": "v"})
