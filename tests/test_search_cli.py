"""The search commands of the CLI: warmup SPEC…, eval-search, and search answering from the shell."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from codemode._cli import main
from codemode._embed import default_embedder
from codemode._progress import TerminalReporter

ROOT = Path(__file__).resolve().parents[1]
PETSTORE = str(ROOT / "specs" / "petstore3-openapi.yaml")
QUERIES = """\
queries:
  - q: "get rid of a pet that died"
    expect: ["DELETE /pet/{petId}"]
  - q: "how many pets are in stock"
    expect: ["GET /store/inventory"]
  - q: "log a user in"
    expect: [api.user.login]
"""
needs_model = pytest.mark.skipif(
    default_embedder() is None, reason="semantic model not installed: `make setup` installs it"
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CODEMODE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@needs_model
def test_warmup_prepares_the_search_caches(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["warmup", PETSTORE, "--no-isolate"]) == 0
    out = capsys.readouterr().out
    assert "Swagger Petstore - OpenAPI 3.0: 19 operations, search hybrid (BM25 + semantic), ready in" in out
    assert list((cache / "embed").glob("*.npy")) and list((cache / "ir").glob("*.pickle"))


def test_warmup_of_a_missing_spec_is_a_clear_error(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["warmup", "nowhere.yaml", "--no-isolate"]) == 2
    assert "error [spec.not_found]" in capsys.readouterr().err


def test_eval_search_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queries = tmp_path / "q.yaml"
    queries.write_text(QUERIES)
    assert main(["eval-search", PETSTORE, "--queries", str(queries), "--ranker", "bm25"]) == 0
    out = capsys.readouterr().out
    assert "| spec | ops | queries | recall@1 | recall@5 | shown in answer | p50 ms | p99 ms |" in out
    assert "| q | 19 | 3 | " in out


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("queries: []\n", "'queries' must be a non-empty list"),
        ("queries:\n  - q: x\n", "'expect' must list the correct operations"),
        ('queries:\n  - q: x\n    expect: ["GET /nope"]\n', "'GET /nope', which is not an operation of"),
        ("[1, 2", "is not valid YAML"),
    ],
)
def test_eval_search_bad_query_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, needle: str
) -> None:
    queries = tmp_path / "q.yaml"
    queries.write_text(content)
    assert main(["eval-search", PETSTORE, "--queries", str(queries), "--ranker", "bm25"]) == 2
    assert needle in capsys.readouterr().err


def test_eval_search_picks_the_entries_for_the_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queries = tmp_path / "q.yaml"
    queries.write_text(
        "specs:\n  pets:\n    file: petstore3-openapi.yaml\n    queries:\n"
        '      - q: "delete a pet"\n        expect: ["DELETE /pet/{petId}"]\n'
        "  other:\n    file: github.json\n    queries:\n"
        '      - q: "x"\n        expect: ["GET /x"]\n'
    )
    assert main(["eval-search", PETSTORE, "--queries", str(queries), "--ranker", "bm25"]) == 0
    assert "| pets | 19 | 1 | 1.00 | 1.00 |" in capsys.readouterr().out


def test_search_command_table_of_contents_and_no_match(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", PETSTORE]) == 0
    assert "19 operations in 3 tags" in capsys.readouterr().out
    assert main(["search", PETSTORE, "xyzzyplugh"]) == 0
    assert "No operation of Swagger Petstore - OpenAPI 3.0 matches 'xyzzyplugh'" in capsys.readouterr().out
    assert main(["search", PETSTORE, "--tag", "nope"]) == 1


def test_terminal_reporter_is_plain_off_a_terminal() -> None:
    assert TerminalReporter(io.StringIO()).tty is False
