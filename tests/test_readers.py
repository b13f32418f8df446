"""Readers on small files written here: every malformed case names its file and line; lenient reads keep the good
rows and return the problems; the good formats (with their real quirks) read as they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.data.context_files import ContextReadResult, read_blip2, read_mplug_owl
from components.data.records import DataFormatError, ReadResult, Span
from components.datasets import DATASETS, MNRE_RELATIONS, labels, load_contexts, load_split, read_split
from components.tasks.joint.mnre_sentences import group_sentences, read_joint
from components.tasks.joint.records import JointExample, Triple
from components.tasks.ner.checks import bio_mentions
from components.tasks.ner.conll import read_conll
from components.tasks.ner.records import NerExample
from components.tasks.re.mnre import read_mnre
from components.tasks.re.records import ReExample

T15 = ["PER", "LOC", "ORG", "OTHER"]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def single_problem(excinfo) -> tuple[Path, int, str]:
    problems = excinfo.value.problems
    assert len(problems) == 1, problems
    return problems[0].path, problems[0].line, problems[0].message


# ----------------------------------------------------------------------------------------------------------- CoNLL
GOOD_CONLL = "IMGID:101\nGeorge\tB-PER\nZimmerman\tI-PER\ngot\tO\n\nIMGID:102\n\xa0\tO\nParis\tB-LOC\n\n"


def test_conll_reads_tweets_tokens_and_tags_as_written(tmp_path):
    path = write(tmp_path / "train.txt", GOOD_CONLL)
    examples = read_conll(path, split="train", entity_types=T15)
    assert examples == [
        NerExample("train-0", "101", ["George", "Zimmerman", "got"], ["B-PER", "I-PER", "O"]),
        NerExample("train-1", "102", ["\xa0", "Paris"], ["O", "B-LOC"]),  # a non-breaking space is a token
    ]


def test_conll_accepts_crlf_and_a_missing_final_blank_line(tmp_path):
    path = write(tmp_path / "t.txt", "IMGID:7\r\nA\tO\r\n\r\nIMGID:8\r\nB\tB-ORG")
    assert [e.tokens for e in read_conll(path, entity_types=T15)] == [["A"], ["B"]]


def test_conll_accepts_and_keeps_sequences_starting_with_i(tmp_path):
    path = write(tmp_path / "t.txt", "IMGID:1\nthe\tO\nNew\tI-LOC\nYork\tI-LOC\nfan\tI-PER\n\n")
    (example,) = read_conll(path, entity_types=T15)
    assert example.tags == ["O", "I-LOC", "I-LOC", "I-PER"]
    assert bio_mentions(example.tags) == [("LOC", True), ("PER", True)]
    assert bio_mentions(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", False), ("LOC", False)]


@pytest.mark.parametrize(
    "text, entity_types, line, expected",
    [
        ("IMGID:1\nok\tO\nbroken line\nend\tO\n\n", T15, 3, ["expected 'token<TAB>tag', found no tab"]),
        ("IMGID:1\nok\tO\textra\n\n", None, 2, ["found 2 tabs"]),
        ("IMGID:1\nok\tO\n\nIMGID:2\nx\tO\nAcme\tB-MISC\n\n", T15, 6, ["unknown tag 'B-MISC'", "B-OTHER"]),
        ("IMGID:1\nok\tPER\n\n", None, 2, ["malformed tag 'PER'"]),  # without a label set only the form is checked
        ("IMGID:1\n\tO\n\n", None, 2, ["empty token"]),
        (
            b"IMGID:1\nok\tO\n\nIMGID:2\nbad\xff\xfe\tO\n\n",
            None,
            5,
            ["undecodable bytes at byte 4 (0xff): expected UTF-8"],
        ),
    ],
    ids=["no-tab", "two-tabs", "unknown-tag", "malformed-tag", "empty-token", "undecodable-bytes"],
)
def test_conll_strict_read_names_the_file_line_and_problem(tmp_path, text, entity_types, line, expected):
    path = write(tmp_path / "train.txt", text)
    with pytest.raises(DataFormatError) as excinfo:
        read_conll(path, entity_types=entity_types)
    assert single_problem(excinfo)[:2] == (path, line)
    assert str(excinfo.value).startswith(f"{path}:{line}: ")
    assert all(fragment in single_problem(excinfo)[2] for fragment in expected)


def test_conll_token_line_before_any_imgid(tmp_path):
    path = write(tmp_path / "t.txt", "stray\tO\nmore\tO\n\nagain\tO\nIMGID:1\nok\tO\n\n")
    result = read_conll(path, strict=False)
    # One problem per block of stray lines, at its first line.
    assert [(p.line, "expected an 'IMGID:<id>' line first" in p.message) for p in result.problems] == [
        (1, True),
        (4, True),
    ]
    assert [e.image_id for e in result.examples] == ["1"]


def test_conll_tweet_without_tokens_and_empty_image_id(tmp_path):
    path = write(tmp_path / "t.txt", "IMGID:1\n\nIMGID:\nx\tO\n\n")
    result = read_conll(path, strict=False)
    assert [(p.line, p.message.split(":")[0]) for p in result.problems] == [
        (1, "tweet has no token lines"),
        (3, "empty image id"),
    ]
    assert result.examples == []


def test_conll_lenient_keeps_good_tweets_with_stable_ids(tmp_path):
    text = "IMGID:1\na\tO\n\nIMGID:2\nb\tB-FOO\nc\tnotab-here\n\nIMGID:3\nd\tB-ORG\n\n"
    text = text.replace("c\tnotab-here", "c notab")
    path = write(tmp_path / "test.txt", text)
    result = read_conll(path, split="test", entity_types=T15, strict=False)
    assert isinstance(result, ReadResult)
    # The broken tweet (index 1) is left out with both of its problems; the third keeps its id test-2.
    assert [e.id for e in result.examples] == ["test-0", "test-2"]
    assert [(p.path, p.line) for p in result.problems] == [(path, 5), (path, 6)]
    # Strict mode reports the same problems, first one in the message.
    with pytest.raises(DataFormatError) as excinfo:
        read_conll(path, split="test", entity_types=T15)
    assert excinfo.value.problems == result.problems
    assert str(excinfo.value).startswith(f"{path}:5: unknown tag 'B-FOO'") and "(and 1 more)" in str(excinfo.value)


def test_conll_limit_counts_tweets(tmp_path):
    path = write(tmp_path / "t.txt", GOOD_CONLL + "IMGID:103\nz\tO\n\n")
    assert [e.image_id for e in read_conll(path, limit=2)] == ["101", "102"]
    assert len(read_conll(path, limit=None)) == 3


# ------------------------------------------------------------------------------------------------------------ MNRE
def mnre_line(tokens, h, t, rel="None", img="twitter_1.jpg") -> str:
    return repr(
        {
            "token": tokens,
            "h": {"name": " ".join(tokens[h[0] : h[1]]), "pos": list(h)},
            "t": {"name": " ".join(tokens[t[0] : t[1]]), "pos": list(t)},
            "img_id": img,
            "relation": rel,
        }
    )


SENT = ["Bill", "Cosby", "visits", "Hollywood", "today"]


def test_mnre_reads_instances(tmp_path):
    path = write(tmp_path / "val.txt", mnre_line(SENT, (0, 2), (3, 4), "/per/misc/present_in") + "\n\n")
    assert read_mnre(path, split="dev", relations=MNRE_RELATIONS) == [
        ReExample("dev-0", "twitter_1", SENT, Span(0, 2), Span(3, 4), "/per/misc/present_in")
    ]


def test_mnre_non_dict_line(tmp_path):
    path = write(tmp_path / "train.txt", mnre_line(SENT, (0, 2), (3, 4)) + "\n['token', 'h']\n")
    with pytest.raises(DataFormatError) as excinfo:
        read_mnre(path)
    path_, line, message = single_problem(excinfo)
    assert (path_, line) == (path, 2)
    assert message == "expected a dict with keys token, h, t, img_id, relation, found a list"


def test_mnre_code_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    path = write(tmp_path / "train.txt", f"__import__('pathlib').Path({str(marker)!r}).touch()\n")
    with pytest.raises(DataFormatError) as excinfo:
        read_mnre(path)
    assert single_problem(excinfo)[1] == 1 and "not a Python literal" in single_problem(excinfo)[2]
    assert not marker.exists()


def test_mnre_span_outside_sentence(tmp_path):
    bad = mnre_line(SENT, (0, 2), (3, 4)).replace("'pos': [3, 4]", "'pos': [4, 9]").replace("'Hollywood'}", "'x'}")
    lines = [mnre_line(SENT, (0, 2), (3, 4)), mnre_line(SENT, (0, 1), (2, 3)), bad]
    path = write(tmp_path / "test.txt", "\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as excinfo:
        read_mnre(path)
    path_, line, message = single_problem(excinfo)
    assert (path_, line) == (path, 3)
    assert message == "tail span [4, 9) outside the sentence: expected 0 <= start < end <= 5 (its token count)"


def test_mnre_empty_and_reversed_spans(tmp_path):
    line = mnre_line(SENT, (0, 2), (3, 4)).replace("'pos': [0, 2]", "'pos': [2, 2]")
    with pytest.raises(DataFormatError, match=r":1: head span \[2, 2\) outside the sentence"):
        read_mnre(write(tmp_path / "a.txt", line + "\n"))


def test_mnre_name_must_match_its_span(tmp_path):
    line = mnre_line(SENT, (0, 2), (3, 4)).replace("'name': 'Bill Cosby'", "'name': 'Bill'")
    with pytest.raises(DataFormatError) as excinfo:
        read_mnre(write(tmp_path / "a.txt", line + "\n"))
    assert "head name 'Bill' differs from the tokens its span [0, 2) covers: 'Bill Cosby'" in single_problem(excinfo)[2]


def test_mnre_unknown_relation_and_missing_key(tmp_path):
    good = mnre_line(SENT, (0, 2), (3, 4))
    lines = [good, mnre_line(SENT, (0, 2), (3, 4), "/per/per/friend"), good.replace("'img_id'", "'image'")]
    path = write(tmp_path / "train.txt", "\n".join(lines) + "\n")
    result = read_mnre(path, relations=MNRE_RELATIONS, strict=False)
    assert [e.id for e in result.examples] == ["train-0"]
    assert [(p.line, p.message) for p in result.problems] == [
        (2, "unknown relation '/per/per/friend': expected one of the 23 MNRE relations"),
        (3, "missing key(s) img_id: expected keys token, h, t, img_id, relation"),
    ]


def test_mnre_undecodable_bytes(tmp_path):
    good = mnre_line(SENT, (0, 2), (3, 4)).encode()
    path = write(tmp_path / "train.txt", good + b"\n" + good.replace(b"today", b"tod\xc3ay") + b"\n")
    with pytest.raises(DataFormatError) as excinfo:
        read_mnre(path)
    assert single_problem(excinfo)[:2] == (path, 2) and "undecodable bytes" in single_problem(excinfo)[2]


def test_mnre_lenient_keeps_good_rows_and_limit(tmp_path):
    lines = [mnre_line(SENT, (0, 2), (3, 4)), "{'token': 3}", mnre_line(SENT, (3, 4), (0, 2), "/loc/loc/contain")]
    path = write(tmp_path / "train.txt", "\n".join(lines) + "\n")
    result = read_mnre(path, strict=False)
    assert [e.id for e in result.examples] == ["train-0", "train-2"]
    assert [(p.line, "missing key(s)" in p.message) for p in result.problems] == [(2, True)]
    assert [e.id for e in read_mnre(path, limit=1)] == ["train-0"]


# ----------------------------------------------------------------------------------------------------------- joint
def test_joint_groups_instances_into_sentences(tmp_path):
    other = ["Paris", "is", "in", "France"]
    lines = [
        mnre_line(SENT, (0, 2), (3, 4), "/per/misc/present_in"),
        mnre_line(other, (0, 1), (3, 4), "/loc/loc/contain", img="b.jpg"),
        mnre_line(SENT, (3, 4), (0, 2), "None"),
        mnre_line(SENT, (4, 5), (0, 2), "/misc/loc/held_on"),
        mnre_line(SENT, (0, 2), (3, 4), "/per/misc/present_in", img="c.jpg"),  # same text, another image
    ]
    path = write(tmp_path / "val.txt", "\n".join(lines) + "\n")
    sentences = read_joint(path, split="dev", relations=MNRE_RELATIONS)
    assert [s.id for s in sentences] == ["dev-0", "dev-1", "dev-2"]
    first = sentences[0]
    assert first == JointExample(
        "dev-0",
        "twitter_1",
        SENT,
        entities=[Span(0, 2), Span(3, 4), Span(4, 5)],
        triples=[
            Triple(Span(0, 2), "/per/misc/present_in", Span(3, 4)),
            Triple(Span(4, 5), "/misc/loc/held_on", Span(0, 2)),
        ],
    )
    assert (sentences[1].image_id, sentences[2].image_id) == ("b", "c")
    assert read_joint(path, split="dev", limit=2) == sentences[:2]
    assert group_sentences(read_mnre(path, split="dev"), split="dev") == sentences


def test_joint_reports_the_mnre_problems(tmp_path):
    path = write(tmp_path / "val.txt", mnre_line(SENT, (0, 2), (3, 4)) + "\n[1, 2]\n")
    result = read_joint(path, strict=False)
    assert len(result.examples) == 1 and [(p.path, p.line) for p in result.problems] == [(path, 2)]
    with pytest.raises(DataFormatError, match=r"val.txt:2: expected a dict"):
        read_joint(path)


# -------------------------------------------------------------------------------------------------------- contexts
def test_blip2_reads_captions_and_keeps_empty_ones(tmp_path):
    path = write(tmp_path / "b.txt", "101.jpg :a man on tv\n16_05_01_367.jpg :nolan on twitter\n102.jpg :\n")
    contexts = read_blip2(path)
    assert contexts.generator == "blip2"
    assert contexts.contexts == {"101": "a man on tv", "16_05_01_367": "nolan on twitter", "102": ""}


def test_blip2_malformed_line(tmp_path):
    path = write(tmp_path / "b.txt", "101.jpg :ok\n102.png: no\n")
    with pytest.raises(DataFormatError) as excinfo:
        read_blip2(path)
    path_, line, message = single_problem(excinfo)
    assert (path_, line) == (path, 2) and message.startswith("expected '<image_id>.jpg :<caption>'")


def test_blip2_duplicates(tmp_path):
    path = write(tmp_path / "b.txt", "1.jpg :a dog\n2.jpg :a cat\n1.jpg :a dog\n2.jpg :a bird\n")
    with pytest.raises(DataFormatError) as excinfo:
        read_blip2(path)
    path_, line, message = single_problem(excinfo)
    assert (path_, line) == (path, 4)  # the identical repeat on line 3 is fine
    assert "duplicate image id '2' with a different text than at line 2" in message
    lenient = read_blip2(path, strict=False)
    assert isinstance(lenient, ContextReadResult)
    assert lenient.context_set.contexts == {"1": "a dog", "2": "a cat"} and len(lenient.problems) == 1


def test_blip2_undecodable_bytes(tmp_path):
    path = write(tmp_path / "b.txt", b"1.jpg :ok\n2.jpg :caf\xe9\n")
    result = read_blip2(path, strict=False)
    assert result.context_set.contexts == {"1": "ok"}
    assert [(p.line, "undecodable bytes at byte 11 (0xe9)" in p.message) for p in result.problems] == [(2, True)]


MPLUG = "imgid:101###The image shows a dog.\n\nIt runs.  \nimgid:O_3437###A couple on a red carpet.\n"


def test_mplug_owl_multiline_descriptions_over_several_files(tmp_path):
    a = write(tmp_path / "train.txt", MPLUG)
    b = write(tmp_path / "dev.txt", "imgid:17_06_1###A stadium.\nimgid:101###The image shows a dog.\n\nIt runs.\n")
    contexts = read_mplug_owl([a, b])
    assert contexts.generator == "mplug-owl"
    assert contexts.contexts == {
        "101": "The image shows a dog.\n\nIt runs.",
        "O_3437": "A couple on a red carpet.",
        "17_06_1": "A stadium.",
    }
    assert read_mplug_owl(a).contexts["101"] == "The image shows a dog.\n\nIt runs."


def test_mplug_owl_duplicate_across_files_names_both_places(tmp_path):
    a = write(tmp_path / "train.txt", MPLUG)
    b = write(tmp_path / "test.txt", "imgid:9###x\nimgid:O_3437###Another text.\n")
    with pytest.raises(DataFormatError) as excinfo:
        read_mplug_owl([a, b])
    path_, line, message = single_problem(excinfo)
    assert (path_, line) == (b, 2)
    assert f"duplicate image id 'O_3437' with a different text than at {a}:4" in message


def test_mplug_owl_text_before_first_header_and_broken_header(tmp_path):
    path = write(tmp_path / "t.txt", "stray text\nmore\nimgid:1###ok\nimgid:2 no separator\nits text\nimgid:3###fine\n")
    result = read_mplug_owl(path, strict=False)
    assert [p.line for p in result.problems] == [1, 4]
    assert "expected an 'imgid:<image_id>###' line first" in result.problems[0].message
    assert "expected 'imgid:<image_id>###<description>'" in result.problems[1].message
    assert result.context_set.contexts == {"1": "ok", "3": "fine"}


# -------------------------------------------------------------------------------------------------------- datasets
def test_labels_and_specs():
    assert labels("twitter2015") == ["PER", "LOC", "ORG", "OTHER"]
    assert labels("twitter2017") == ["PER", "LOC", "ORG", "MISC"]
    mnre = labels("mnre")
    assert mnre[0] == "None" and mnre[1:] == sorted(mnre[1:]) and len(mnre) == 23
    assert labels("mnre-joint") == labels("mnre")[1:] and len(labels("mnre-joint")) == 22
    assert {s.task for s in DATASETS.values()} == {"ner", "re", "joint"}
    assert DATASETS["mnre"].files["dev"] == "mnre/val.txt"
    assert DATASETS["twitter2017"].files["dev"] == "twitter2017/valid.txt"
    with pytest.raises(KeyError, match="unknown dataset 'twitter2019'"):
        labels("twitter2019")


def make_t17(data_dir: Path, train: str) -> None:
    write(data_dir / "twitter2017/train.txt", train)
    write(data_dir / "twitter2017/valid.txt", "IMGID:16_05_01_1\nok\tO\n\n")
    write(data_dir / "twitter2017/test.txt", "IMGID:O_2\nok\tB-MISC\n\n")


def test_load_split_strict_and_lenient(tmp_path):
    make_t17(tmp_path, "IMGID:17_06_1\nA\tB-OTHER\n\nIMGID:17_06_2\nB\tB-MISC\n\n")  # OTHER is twitter2015's name
    train = tmp_path / "twitter2017/train.txt"
    with pytest.raises(DataFormatError, match=rf"^{train}:2: unknown tag 'B-OTHER'"):
        load_split("twitter2017", "train", tmp_path)
    assert [e.id for e in load_split("twitter2017", "train", tmp_path, strict=False)] == ["train-1"]
    read = read_split("twitter2017", "train", tmp_path)
    assert [(p.path, p.line) for p in read.problems] == [(train, 2)]
    assert load_split("twitter2017", "dev", tmp_path)[0].id == "dev-0"
    with pytest.raises(FileNotFoundError, match="mnre/val.txt"):
        load_split("mnre", "dev", tmp_path)


def test_load_contexts_from_a_data_dir(tmp_path):
    write(tmp_path / "contexts/blip2/twitter2017.txt", "O_2.jpg :x\nO_2.jpg :y\n")
    with pytest.raises(DataFormatError, match=r"twitter2017.txt:2: duplicate image id 'O_2'"):
        load_contexts("blip2", "twitter2017", tmp_path)
    assert load_contexts("blip2", "mnre", tmp_path).contexts == {}  # no published set covers MNRE's images
    with pytest.raises(FileNotFoundError, match="twitter2015.txt"):
        load_contexts("blip2", "twitter2015", tmp_path)
