"""tests/docs_commands.py finds the commands a reader would find in markdown: in code
blocks, in code spans (also one wrapped onto the next line), and in spans that leave
the program's name out (`replay --from-topic X`)."""

from __future__ import annotations

from tests.docs_commands import calls_on_page, code_spans, with_program


def calls(text: str) -> list[tuple[str, str, bool]]:
    """(where, key words, synopsis) of each call on a page named p.md."""
    return [(c.where, " ".join((*c.env, *c.argv)), c.synopsis) for c in calls_on_page("p.md", text)]


def test_a_span_wrapped_onto_the_next_line_is_one_command() -> None:
    text = (
        "Intro line.\n"
        "Run `engagement-monitor replay --file x.jsonl\n"
        "  --speed max` to copy it, then `engagement-monitor status\n"
        "--json`.\n"
    )
    assert list(code_spans(text)) == [
        (2, "engagement-monitor replay --file x.jsonl --speed max"),
        (3, "engagement-monitor status --json"),
    ]
    assert calls(text) == [
        ("p.md:2", "engagement-monitor replay --file x.jsonl --speed max", False),
        ("p.md:3", "engagement-monitor status --json", False),
    ]


def test_a_span_never_crosses_a_blank_line_or_a_fenced_block() -> None:
    text = (
        "A stray ` backtick ends nothing here.\n\n```sh\necho `date`\n```\nThen `make logs` runs.\n"
    )
    assert list(code_spans(text)) == [(6, "make logs")]


def test_a_subcommand_without_the_program_name_is_a_mention_of_it() -> None:
    text = (
        "Read it with `dlq show --reason R`, or `replay --from-topic X`;\n"
        "`EM_APP_ID=blog status --json` for another app. The `status` column and\n"
        "`watch` alone name things, they are no calls.\n"
    )
    assert calls(text) == [
        ("p.md:1", "engagement-monitor dlq show --reason R", True),
        ("p.md:1", "engagement-monitor replay --from-topic X", True),
        ("p.md:2", "EM_APP_ID=blog engagement-monitor status --json", True),
    ]
    # what the docs-examples test runs for an entry without its own `run`
    assert with_program("top brand-01 --app-id shop") == (
        "engagement-monitor top brand-01 --app-id shop"
    )
    assert with_program("topology of the stages") == "topology of the stages"


def test_choices_in_a_table_cell_make_a_synopsis() -> None:
    text = "| `dlq stats\\|show\\|export` | the dead letters |\n"
    assert calls(text) == [("p.md:1", "engagement-monitor dlq stats|show|export", True)]


def test_code_blocks_and_named_spans_are_commands_to_copy() -> None:
    text = (
        "Example:\n"
        "\n"
        "    engagement-monitor replay --from-topic a \\\n"
        "      --from -2m --to now   # a comment\n"
        "\n"
        "Or `engagement-monitor top brand-00 --json` and `engagement-monitor backfill`.\n"
    )
    assert calls(text) == [
        ("p.md:3", "engagement-monitor replay --from-topic a --from -2m --to now", False),
        ("p.md:6", "engagement-monitor top brand-00 --json", False),
        ("p.md:6", "engagement-monitor backfill", True),  # a bare name in prose
    ]
