"""A user's data: every source format gives the same records, every bad record stops with one line
naming the source, the record and the field, and splits depend on each record's content alone."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from steerscope.data.records import Conflict, ContrastPair, TomStory
from steerscope.data.user_data import read_user_data, split_by_hash
from steerscope.errors import InputError

DATA = Path(__file__).parent / "data"


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def one_line_error(kind: str, source: str) -> str:
    with pytest.raises(InputError) as caught:
        read_user_data(kind, source)
    message = str(caught.value)
    assert "\n" not in message
    return message


STORY = {"story": "Ann puts the ball in the box. She leaves. Bob moves it to the bag. Ann looks in the",
         "answer": "box", "foil": "bag", "false_belief": True}  # fmt: skip


# ---------------------------------------------------------------- formats


@pytest.fixture(scope="module")
def conflict_rows() -> list[dict]:
    return [json.loads(line) for line in (DATA / "conflicts.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, conflict_rows: list[dict]) -> dict[str, str]:
    """The conflict fixture as Parquet, a datasets folder and a one-split DatasetDict folder."""
    import datasets

    folder = tmp_path_factory.mktemp("formats")
    # Nested lists must be lists in every row for Arrow: the fixture mixes strings and lists.
    rows = [
        {k: [v] if k.endswith("answer") and isinstance(v, str) else v for k, v in r.items()}
        for r in conflict_rows
    ]
    table = datasets.Dataset.from_list(rows)
    table.to_parquet(folder / "conflicts.parquet")
    table.save_to_disk(folder / "saved")
    datasets.DatasetDict({"dev": table}).save_to_disk(folder / "saved_dict")
    datasets.DatasetDict({"dev": table, "test": table}).save_to_disk(folder / "two_splits")
    return {name: str(folder / name) for name in ("conflicts.parquet", "saved", "saved_dict", "two_splits")}


def test_jsonl_json_parquet_and_datasets_folders_give_the_same_records(saved: dict[str, str]) -> None:
    jsonl = read_user_data("conflicts", str(DATA / "conflicts.jsonl"))
    assert len(jsonl.records) == 16 and isinstance(jsonl.records[0], Conflict)
    assert jsonl.records[1].org_answer == ("William Shakespeare", "Shakespeare")  # a list of answers
    assert jsonl.records[2].org_answer == ("Au",)  # a bare string
    for source in (saved["conflicts.parquet"], saved["saved"], saved["saved_dict"]):
        assert read_user_data("conflicts", source).records == jsonl.records
    assert read_user_data("conflicts", str(DATA / "conflicts.json")).records == jsonl.records[:6]


def test_csv_rows_read_as_records_with_true_false_cells() -> None:
    data = read_user_data("tom", str(DATA / "tom.csv"))
    assert [r.false_belief for r in data.records] == [True, False, True, False]
    assert data.records[3].answers == (" paper clips",) and data.records[3].kind == "contents"


def test_txt_paragraphs_and_text_records_are_the_text_kind() -> None:
    paragraphs = read_user_data("text", str(DATA / "text.txt")).records
    assert (
        len(paragraphs) == 6 and paragraphs[0].startswith("The ferry") and paragraphs[0].endswith("windows.")
    )
    records = read_user_data("text", str(DATA / "text.jsonl")).records
    assert records[0].startswith("The library")  # extra fields ignored


def test_a_datasets_folder_with_several_splits_asks_for_one(saved: dict[str, str]) -> None:
    message = one_line_error("conflicts", saved["two_splits"])
    assert "holds the splits dev, test; choose one" in message


def test_reading_leaves_nothing_next_to_the_data_or_in_the_temporary_folder(saved: dict[str, str]) -> None:
    folder = Path(saved["conflicts.parquet"]).parent
    before = set(folder.iterdir()), set(Path(tempfile.gettempdir()).glob("steerscope-data-*"))
    read_user_data("conflicts", saved["conflicts.parquet"])
    read_user_data("tom", str(DATA / "tom.csv"))
    assert (set(folder.iterdir()), set(Path(tempfile.gettempdir()).glob("steerscope-data-*"))) == before


def test_sha256_is_of_the_bytes_read_and_duplicates_are_counted() -> None:
    import hashlib

    path = DATA / "tom.jsonl"
    data = read_user_data("tom", str(path))
    assert data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (data.n_read, len(data.records), data.duplicates) == (13, 12, 1)
    provenance = data.provenance()
    assert provenance["records"] == 12 and provenance["duplicates_dropped"] == 1
    assert sum(provenance["splits"].values()) == 12


def test_hub_source_offline_is_one_line_naming_network_or_a_local_copy(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = one_line_error("conflicts", "hf:pminervini/NQ-Swap:dev")
    assert message.startswith("hf:pminervini/NQ-Swap:dev: needs network access")
    assert "local copy" in message


# ---------------------------------------------------------------- records


def test_tom_answers_may_be_several_and_get_a_leading_space(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "t.jsonl", [{**STORY, "answer": ["box", " red box"], "kind": "transfer"}])
    (story,) = read_user_data("tom", source).records
    assert story == TomStory(STORY["story"], (" box", " red box"), (" bag",), True, "transfer")


@pytest.mark.parametrize(
    ("answer", "number"),
    [
        ("Some steps\n#### 72", 72),
        ("#### 1,200", 1200),
        ("#### -5", -5),
        ("#### 2.5", 2.5),
        (90, 90),
        ("7", 7),
        (3.0, 3),
    ],
)
def test_gsm8k_answers_parse_to_numbers(tmp_path: Path, answer, number) -> None:
    source = write_jsonl(tmp_path / "p.jsonl", [{"question": "How many?", "answer": answer}])
    (problem,) = read_user_data("problems", source).records
    assert problem.answer == number and type(problem.answer) is type(number)
    assert problem.solutions == {}


def test_pairs_keep_their_completion_if_they_have_one() -> None:
    pairs = read_user_data("pairs", str(DATA / "pairs_completion.jsonl")).records
    assert isinstance(pairs[0], ContrastPair) and pairs[0].completion == " A: It is two streets away."
    plain = read_user_data("pairs", str(DATA / "pairs.jsonl")).records
    assert len(plain) == 12 and {p.completion for p in plain} == {None}


# ---------------------------------------------------------------- one-line errors


def test_wrong_type_names_file_line_and_field(tmp_path: Path) -> None:
    rows = [STORY] * 6 + [{**STORY, "story": "x. Ann looks in the", "false_belief": "yes"}]
    source = write_jsonl(tmp_path / "my_tom.jsonl", rows)
    assert one_line_error("tom", source) == (
        f"{source} line 7: field 'false_belief' must be true or false, got \"yes\""
    )


def test_missing_field_names_line_field_and_the_schema(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "t.jsonl", [STORY, {k: v for k, v in STORY.items() if k != "foil"}])
    message = one_line_error("tom", source)
    assert message.startswith(f"{source} line 2: missing field 'foil'; tom records need story, answer, foil")


def test_answer_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "t.jsonl", [{**STORY, "answer": []}])
    assert "line 1: field 'answer' must be text or a list of texts, got []" in one_line_error("tom", source)


def test_unparseable_problem_answer_is_refused(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "p.jsonl", [{"question": "How many?", "answer": "about ten"}])
    message = one_line_error("problems", source)
    assert "line 1: field 'answer' must be a number or text ending in '#### <number>'" in message


def test_malformed_json_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(STORY) + "\n\n" + '{"story": "unfinished\n')
    assert one_line_error("tom", str(path)).startswith(f"{path} line 3: not valid JSON")


def test_a_record_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "t.jsonl", [["story", "answer"]])
    assert "line 1: a record must be an object with named fields" in one_line_error("tom", source)


def test_csv_errors_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        'story,answer,foil,false_belief\n"Ann looks in the",box,bag,true\n"Ann looks in the",box,bag,maybe\n'
    )
    assert f"{path} row 2: field 'false_belief' must be true or false" in one_line_error("tom", str(path))


def test_a_json_file_must_hold_a_list(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"records": [STORY]}))
    assert "must hold a list of records" in one_line_error("tom", str(path))


def test_empty_source_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    assert one_line_error("tom", str(path)) == f"{path}: no records"


def test_unknown_kind_lists_the_kinds() -> None:
    message = one_line_error("stories", str(DATA / "tom.jsonl"))
    assert message == "unknown data kind 'stories'; valid: tom, conflicts, problems, text, pairs"


def test_unknown_format_and_missing_file_are_errors(tmp_path: Path) -> None:
    (tmp_path / "t.xlsx").write_text("")
    assert "unknown format '.xlsx'; valid: .jsonl, .json, .csv, .parquet" in one_line_error(
        "tom", str(tmp_path / "t.xlsx")
    )
    assert one_line_error("tom", str(tmp_path / "nope.jsonl")).endswith("no such file or folder")


def test_plain_text_is_only_for_the_text_kind() -> None:
    assert "only the text kind takes" in one_line_error("tom", str(DATA / "text.txt"))


def test_pairs_mixing_completions_are_refused(tmp_path: Path) -> None:
    rows = [{"positive": "a", "negative": "b"}, {"positive": "c", "negative": "d", "completion": " e"}]
    message = one_line_error("pairs", write_jsonl(tmp_path / "p.jsonl", rows))
    assert "line 2: has a 'completion' while line 1 lacks one" in message


# ---------------------------------------------------------------- splits


def test_splits_are_by_content_so_adding_records_moves_no_other() -> None:
    records = read_user_data("conflicts", str(DATA / "conflicts.jsonl")).records
    shares = (("held_out", 0.3), ("train", 0.7))
    before = split_by_hash(records[:10], shares)
    after = split_by_hash(records, shares)
    for name in ("held_out", "train"):
        assert set(before[name]) <= set(after[name])
    assert split_by_hash(records, shares) == after
    larger = split_by_hash(records, (("held_out", 0.6), ("train", 0.4)))
    assert set(after["held_out"]) <= set(larger["held_out"])  # more held out only adds to it


def test_a_subset_taken_before_a_split_does_not_lean_toward_one_split() -> None:
    from steerscope.data.defaults import natural_suite

    data = read_user_data(
        "conflicts", str(DATA.parent.parent / "examples" / "data" / "conflicts_nqswap.jsonl")
    )
    conflicts = natural_suite().conflicts.with_user(data)
    for n in (60, 120):
        chosen = conflicts.candidates(n, 0)
        train, held = conflicts.split(chosen, 0.3, 0)
        assert len(chosen) == n and 0.2 <= len(held) / n <= 0.4
